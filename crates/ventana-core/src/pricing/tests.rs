#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const EXAMPLE: &str = r#"
version = "2026-12-example"
effective_from = "2026-12-01T00:00:00Z"
model = "per_message_2025"
currency = "USD"
precision = 4
free_conversations_per_month = 2

[rates.default]
marketing = "0.0250"
utility = "0.0040"
authentication = "0.0035"
service = "0"

[rates.country.44]
marketing = "0.0529"

[rates.country.4420]
marketing = "0.0600"

[[tiers.utility]]
from = 1000
rate = "0.0030"

[[tiers.utility]]
from = 5000
rate = "0.0020"

[[bands]]
from = 0
rate = "0.0100"

[[bands]]
from = 1000
rate = "0.0080"
"#;

fn policy(model: &str) -> Policy {
    Policy::parse(&EXAMPLE.replace("per_message_2025", model)).unwrap()
}

fn number(digits: &str) -> PhoneNumber {
    digits.parse().unwrap()
}

fn delivery(
    to: &PhoneNumber,
    category: PricingCategory,
    template: bool,
    window: WindowState,
) -> Delivery<'_> {
    Delivery {
        category,
        template,
        window,
        destination: to,
        charged_this_month: 0,
        conversation_open: false,
        conversations_this_month: 0,
        manual: false,
    }
}

#[test]
fn amounts_are_parsed_exactly_at_the_cards_precision() {
    assert_eq!(Amount::parse("0.0250", 4), Ok(Amount(250)));
    assert_eq!(Amount::parse("1", 4), Ok(Amount(10_000)));
    assert_eq!(Amount::parse("0.5", 4), Ok(Amount(5_000)));
    assert_eq!(Amount::parse("12.34", 2), Ok(Amount(1_234)));
    assert_eq!(Amount::parse("7", 0), Ok(Amount(7)));
    for bad in [
        "0.00001",
        "-1",
        "1e3",
        "",
        ".5",
        "1.",
        "0,5",
        " 1",
        "99999999999999999999",
    ] {
        assert!(Amount::parse(bad, 4).is_err(), "{bad:?}");
    }
    assert_eq!(Amount(250).display(4), "0.0250");
    assert_eq!(Amount(10_000).display(4), "1.0000");
    assert_eq!(Amount(7).display(0), "7");
}

#[test]
fn the_example_policy_reads_as_written() {
    let p = policy("per_message_2025");
    assert_eq!(p.version, "2026-12-example");
    assert_eq!(p.effective_from, crate::time::UnixTime(1_796_083_200));
    assert_eq!(p.model, Model::PerMessage2025);
    assert_eq!((p.currency.as_str(), p.precision), ("USD", 4));
    assert_eq!(p.free_conversations, 2);
}

#[test]
fn the_longest_calling_code_sets_the_rate_and_the_default_covers_the_rest() {
    let p = policy("every_message");
    let rate = |to: &str, c| p.rates.rate(c, &number(to));
    assert_eq!(
        rate("447700900123", PricingCategory::Marketing),
        Amount(529)
    );
    assert_eq!(
        rate("442071234567", PricingCategory::Marketing),
        Amount(600)
    );
    assert_eq!(rate("14155550123", PricingCategory::Marketing), Amount(250));
    // The UK card sets marketing only: utility there is the default.
    assert_eq!(rate("447700900123", PricingCategory::Utility), Amount(40));
}

#[test]
fn window_2018_charges_only_templates_outside_the_window() {
    let p = policy("window_2018");
    let to = number("14155550123");
    let d = |template, window| p.rate(&delivery(&to, PricingCategory::Marketing, template, window));
    assert_eq!(d(true, WindowState::Open).amount, Amount::ZERO);
    assert_eq!(
        d(true, WindowState::Open).pricing_type,
        PricingType::FreeCustomerService
    );
    assert_eq!(
        d(true, WindowState::FreeEntryPoint).pricing_type,
        PricingType::FreeEntryPoint
    );
    let charged = d(true, WindowState::Closed);
    assert_eq!((charged.amount, charged.billable), (Amount(250), true));
    assert_eq!(charged.pricing_type, PricingType::Regular);
    assert_eq!(d(false, WindowState::Closed).amount, Amount::ZERO);
}

#[test]
fn per_message_2025_frees_free_form_and_utility_in_the_window_and_tiers_utility() {
    let p = policy("per_message_2025");
    let to = number("14155550123");
    let at = |category, template, window, count| {
        let mut d = delivery(&to, category, template, window);
        d.charged_this_month = count;
        p.rate(&d)
    };
    use PricingCategory::*;
    use WindowState::*;
    assert_eq!(at(Service, false, Open, 0).amount, Amount::ZERO);
    assert_eq!(at(Utility, true, Open, 0).amount, Amount::ZERO);
    assert_eq!(at(Marketing, true, Open, 0).amount, Amount(250));
    assert_eq!(at(Authentication, true, Open, 0).amount, Amount(35));
    assert_eq!(at(Marketing, true, FreeEntryPoint, 0).amount, Amount::ZERO);
    assert_eq!(at(Utility, true, Closed, 0).amount, Amount(40));
    assert_eq!(at(Utility, true, Closed, 999).amount, Amount(40));
    assert_eq!(at(Utility, true, Closed, 1_000).amount, Amount(30));
    assert_eq!(at(Utility, true, Closed, 7_000).amount, Amount(20));
    // Authentication has no tiers in this file: the card's rate at any volume.
    assert_eq!(at(Authentication, true, Closed, 7_000).amount, Amount(35));
    assert_eq!(p.model.webhook_name(), "PMP");
}

#[test]
fn conversation_2022_charges_the_opening_message_after_the_free_allowance() {
    let p = policy("conversation_2022");
    let to = number("14155550123");
    let open = |opened, riding| {
        let mut d = delivery(&to, PricingCategory::Marketing, true, WindowState::Closed);
        d.conversations_this_month = opened;
        d.conversation_open = riding;
        p.rate(&d)
    };
    // The first two conversations of the month are free, and each opens one.
    assert_eq!(open(0, false).amount, Amount::ZERO);
    assert!(open(1, false).opens_conversation);
    let third = open(2, false);
    assert_eq!(
        (third.amount, third.opens_conversation),
        (Amount(250), true)
    );
    // A message inside an open conversation costs nothing more.
    let riding = open(5, true);
    assert_eq!(
        (riding.amount, riding.opens_conversation),
        (Amount::ZERO, false)
    );
    assert_eq!(p.model.webhook_name(), "CBP");
}

#[test]
fn every_message_charges_free_form_as_service_and_templates_by_category() {
    let p = policy("every_message");
    let to = number("14155550123");
    let d = |category, template| p.rate(&delivery(&to, category, template, WindowState::Open));
    assert_eq!(d(PricingCategory::Marketing, true).amount, Amount(250));
    assert_eq!(d(PricingCategory::Service, false).amount, Amount::ZERO);
}

#[test]
fn volume_prices_by_monthly_band_whatever_the_window() {
    let p = policy("volume");
    let to = number("14155550123");
    let at = |count| {
        let mut d = delivery(&to, PricingCategory::Service, false, WindowState::Open);
        d.charged_this_month = count;
        p.rate(&d).amount
    };
    assert_eq!(at(0), Amount(100));
    assert_eq!(at(999), Amount(100));
    assert_eq!(at(1_000), Amount(80));
}

/// Every combination of the inputs, for every model: amounts are never negative, `billable`
/// is exactly "costs something", a free type costs nothing, the same inputs give the same
/// amount, and within a month a larger volume never costs more per message.
#[test]
fn rating_holds_its_invariants_over_every_combination() {
    let to = number("447700900123");
    let counts = [0, 1, 999, 1_000, 4_999, 5_000, 1_000_000];
    for model in Model::ALL {
        let p = policy(model.as_str());
        for category in PricingCategory::ALL {
            for template in [false, true] {
                for window in [
                    WindowState::Open,
                    WindowState::FreeEntryPoint,
                    WindowState::Closed,
                ] {
                    for riding in [false, true] {
                        let mut previous: Option<Amount> = None;
                        for count in counts {
                            let d = Delivery {
                                category,
                                template,
                                window,
                                destination: &to,
                                charged_this_month: count,
                                conversation_open: riding,
                                conversations_this_month: count,
                                manual: false,
                            };
                            let decision = p.rate(&d);
                            let case =
                                format!("{model} {category:?} {template} {window:?} {count}");
                            assert!(decision.amount >= Amount::ZERO, "{case}");
                            assert_eq!(decision.billable, decision.amount > Amount::ZERO, "{case}");
                            if decision.pricing_type != PricingType::Regular {
                                assert_eq!(decision.amount, Amount::ZERO, "{case}");
                            }
                            assert_eq!(decision, p.rate(&d), "{case}");
                            if model != Model::Conversation2022
                                && let Some(previous) = previous
                            {
                                assert!(decision.amount <= previous, "{case}");
                            }
                            previous = Some(decision.amount);
                        }
                    }
                }
            }
        }
    }
}

fn refused(text: &str) -> PolicyError {
    Policy::parse(text).unwrap_err()
}

#[test]
fn a_mistake_is_refused_with_its_line_and_field() {
    let e = refused(&EXAMPLE.replace("\"per_message_2025\"", "\"per_minute\""));
    assert_eq!((e.line, e.field.as_str()), (Some(4), "model"));

    let e = refused(&EXAMPLE.replace("\"0.0529\"", "\"0.05291\""));
    assert_eq!(
        (e.line, e.field.as_str()),
        (Some(16), "rates.country.44.marketing")
    );
    assert!(e.message.contains("decimals"), "{e}");

    let e = refused(&EXAMPLE.replace("rate = \"0.0080\"", "rate = \"0.0200\""));
    assert_eq!(e.field, "bands[1].rate");
    assert!(e.message.contains("may not cost more"), "{e}");

    let e = refused(&EXAMPLE.replace("service = \"0\"\n", ""));
    assert_eq!(e.field, "rates.default.service");

    let e = refused(&EXAMPLE.replace("marketing = \"0.0250\"", "marketing = 0.025"));
    assert_eq!(e.line, Some(10));

    let e = refused(&format!("{EXAMPLE}\nsurcharge = 3\n"));
    assert!(e.message.contains("surcharge"), "{e}");

    let e = refused(&EXAMPLE.replace("[rates.country.44]", "[rates.country.uk]"));
    assert_eq!(e.field, "rates.country.uk");

    let e = refused(&EXAMPLE.replace("[[tiers.utility]]", "[[tiers.marketing]]"));
    assert_eq!(e.field, "tiers.marketing");

    let volume_without_bands = EXAMPLE
        .replace("per_message_2025", "volume")
        .replace("[[bands]]\nfrom = 0\nrate = \"0.0100\"\n\n", "");
    assert_eq!(refused(&volume_without_bands).field, "bands");
}

// --- usage, replay, reports ------------------------------------------------------------

fn charge_to(n: u32, to: &str, category: PricingCategory, at: i64) -> ledger::Charge {
    ledger::Charge {
        waba_id: "7001".parse().unwrap(),
        message_id: format!("wamid.usagetestmessage{n:06}").parse().unwrap(),
        destination: number(to),
        delivered_at: UnixTime(at),
        policy_version: "2026-12-example".into(),
        model: Model::Conversation2022,
        category,
        template: true,
        window: WindowState::Closed,
        pricing_type: PricingType::Regular,
        manual: false,
        rate: Amount::ZERO,
        amount: Amount::ZERO,
        currency: "USD".into(),
        precision: 4,
        conversation_id: None,
    }
}

/// Rates `charges` in order as the relay does, writing each decision into its charge, and
/// chains them: a ledger as metering would have written it.
fn metered(policy: &Policy, charges: Vec<ledger::Charge>) -> Vec<LedgerEntry> {
    let mut usage = Usage::default();
    let mut entries: Vec<LedgerEntry> = Vec::new();
    for mut c in charges {
        let (d, conversation) = usage.rate(policy, &c);
        usage.record(&c, &d, conversation.as_ref());
        c.model = d.model;
        c.pricing_type = d.pricing_type;
        c.rate = d.rate;
        c.amount = d.amount;
        c.conversation_id = conversation.map(|n| n.id);
        let next = LedgerEntry::chain(entries.last(), c);
        entries.push(next);
    }
    entries
}

#[test]
fn conversations_open_ride_and_expire_with_a_free_allowance() {
    let p = policy("conversation_2022");
    let day = 1_796_083_200; // 2026-12-01
    use PricingCategory::{Marketing, Utility};
    let entries = metered(
        &p,
        vec![
            charge_to(1, "14155550001", Marketing, day), // opens (free 1 of 2)
            charge_to(2, "14155550001", Marketing, day + 60), // rides
            charge_to(3, "14155550001", Utility, day + 120), // another category: opens (free 2)
            charge_to(4, "14155550002", Marketing, day + 180), // opens, charged
            charge_to(5, "14155550001", Marketing, day + 86_400), // expired: opens, charged
        ],
    );
    let amounts: Vec<i64> = entries.iter().map(|e| e.charge.amount.0).collect();
    assert_eq!(amounts, [0, 0, 0, 250, 250]);
    let ids: Vec<_> = entries
        .iter()
        .map(|e| e.charge.conversation_id.clone().unwrap())
        .collect();
    assert_eq!(
        ids[0], ids[1],
        "the second message rides on the first's conversation"
    );
    assert_ne!(ids[0], ids[2]);
    assert_ne!(ids[0], ids[4]);
    assert_eq!(
        ids[0],
        conversation_id(&"7001".parse().unwrap(), &entries[0].charge.message_id)
    );
    // The chain as metered recomputes exactly.
    assert_eq!(report::recompute(&entries, |_| Some(&p)), vec![]);
}

#[test]
fn tiers_count_the_months_charged_messages_and_restart_each_month() {
    let text = EXAMPLE.replace(
        "from = 1000\nrate = \"0.0030\"",
        "from = 2\nrate = \"0.0030\"",
    );
    let tiered = Policy::parse(&text).unwrap();
    let december = 1_796_083_200;
    let mut charges = Vec::new();
    // Three in the last hour of November, two in the first of December.
    for (n, at) in [-3_600, -3_000, -2_400, 600, 1_200].into_iter().enumerate() {
        let mut c = charge_to(
            n as u32,
            "14155550001",
            PricingCategory::Utility,
            december + at,
        );
        c.model = Model::PerMessage2025;
        charges.push(c);
    }
    let entries = metered(&tiered, charges);
    let amounts: Vec<i64> = entries.iter().map(|e| e.charge.amount.0).collect();
    assert_eq!(amounts, [40, 40, 30, 40, 40]);
    assert_eq!(report::recompute(&entries, |_| Some(&tiered)), vec![]);
}

#[test]
fn recompute_reports_an_amount_its_inputs_do_not_give() {
    let p = policy("per_message_2025");
    let mut charges = Vec::new();
    for n in 0..3 {
        let mut c = charge_to(
            n,
            "447700900123",
            PricingCategory::Marketing,
            1_796_083_200 + i64::from(n),
        );
        c.model = Model::PerMessage2025;
        charges.push(c);
    }
    let mut entries = metered(&p, charges);
    assert_eq!(entries[1].charge.amount, Amount(529));
    assert_eq!(report::recompute(&entries, |_| Some(&p)), vec![]);
    entries[1].charge.amount = Amount(1);
    let found = report::recompute(&entries, |_| Some(&p));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].seq, 2);
    assert!(
        found[0]
            .what
            .contains("amount 0.0001 where the policy gives 0.0529"),
        "{found:?}"
    );
    let unknown = report::recompute(&entries, |_| None);
    assert_eq!(unknown.len(), 3);
}

#[test]
fn rerate_and_statement_total_a_month_exactly() {
    let p = policy("per_message_2025");
    let start = 1_796_083_200;
    let mut charges = Vec::new();
    for (n, (to, category, template)) in [
        ("447700900123", PricingCategory::Marketing, true),
        ("14155550001", PricingCategory::Marketing, true),
        ("14155550001", PricingCategory::Service, false),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = charge_to(n as u32, to, category, start + n as i64);
        c.model = Model::PerMessage2025;
        c.template = template;
        charges.push(c);
    }
    let entries = metered(&p, charges);
    let month = Month::parse("2026-12").unwrap();
    let statements = report::statement(month, &entries);
    let usd = &statements[&report::Currency {
        code: "USD".into(),
        precision: 4,
    }];
    assert_eq!((usd.total.messages, usd.total.amount), (3, 529 + 250));
    assert_eq!(usd.by_country["GB"].amount, 529);
    assert_eq!(usd.lines.len(), 2);
    let every = policy("every_message");
    let rerated = report::rerate(month, &entries, &every).unwrap();
    assert_eq!(rerated["marketing"].old_amount, 779);
    assert_eq!(rerated["marketing"].new_amount, 779);
    assert_eq!(rerated["service"].new_amount, 0);
    assert!(report::statement(Month::parse("2026-11").unwrap(), &entries).is_empty());
}

#[test]
fn months_read_and_bound_exactly() {
    let m = Month::parse("2026-12").unwrap();
    assert_eq!(m.start(), UnixTime(1_796_083_200));
    assert_eq!(
        m.end(),
        UnixTime::parse_rfc3339("2027-01-01T00:00:00Z").unwrap()
    );
    assert_eq!(m.next().to_string(), "2027-01");
    for bad in ["2026-13", "2026-1", "26-12", "2026/12", "", "1969-12"] {
        assert!(Month::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_business_override_replaces_only_what_it_names() {
    let text = format!(
        "{EXAMPLE}\n[business.7001]\nmodel = \"every_message\"\n[business.7001.rates.default]\nmarketing = \"0.0100\"\n"
    );
    let p = Policy::parse(&text).unwrap();
    let mine = p.for_business(&"7001".parse().unwrap());
    assert_eq!(mine.model, Model::EveryMessage);
    assert_eq!(
        mine.rates
            .rate(PricingCategory::Marketing, &number("14155550001")),
        Amount(100)
    );
    assert_eq!(
        mine.rates
            .rate(PricingCategory::Utility, &number("14155550001")),
        Amount(40)
    );
    assert_eq!(
        mine.rates
            .rate(PricingCategory::Marketing, &number("447700900123")),
        Amount(529)
    );
    let other = p.for_business(&"7002".parse().unwrap());
    assert_eq!(other.model, Model::PerMessage2025);
    let e =
        Policy::parse(&format!("{EXAMPLE}\n[business.7001]\nmodel = \"hourly\"\n")).unwrap_err();
    assert_eq!(e.field, "business.7001.model");
    assert!(e.line.is_some());
}

#[test]
fn the_built_in_example_policy_reads() {
    let p = Policy::parse(EXAMPLE_POLICY).unwrap();
    assert_eq!(p.model, Model::PerMessage2025);
    assert_eq!(p.effective_from, UnixTime(0));
}

// --- properties ------------------------------------------------------------------------

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A policy of `model` with random rates, tiers, bands and allowance, as a file.
    fn policy_text(
        model: Model,
        rates: [u32; 4],
        bands: &[(u32, u32)],
        free_conversations: u8,
    ) -> String {
        let money = |minor: u32| Amount(i64::from(minor)).display(4);
        let mut text = format!(
            "version = \"p\"\neffective_from = \"2026-01-01T00:00:00Z\"\nmodel = \"{}\"\n\
             currency = \"EUR\"\nprecision = 4\nfree_conversations_per_month = {free_conversations}\n\
             [rates.default]\nmarketing = \"{}\"\nutility = \"{}\"\nauthentication = \"{}\"\nservice = \"{}\"\n",
            model.as_str(),
            money(rates[0]),
            money(rates[1]),
            money(rates[2]),
            money(rates[3]),
        );
        // Bands: increasing starts from 0, non-increasing rates.
        let mut from = 0_u64;
        let mut rate = bands.first().map_or(100, |b| b.1);
        for (i, (step, cut)) in bands.iter().enumerate() {
            if i > 0 {
                from += u64::from(*step) + 1;
                rate = rate.saturating_sub(*cut);
            }
            text.push_str(&format!(
                "[[bands]]\nfrom = {from}\nrate = \"{}\"\n",
                money(rate)
            ));
            text.push_str(&format!(
                "[[tiers.utility]]\nfrom = {}\nrate = \"{}\"\n",
                from + 1,
                money(rate)
            ));
        }
        if bands.is_empty() {
            text.push_str("[[bands]]\nfrom = 0\nrate = \"0.0100\"\n");
        }
        text
    }

    fn model() -> impl Strategy<Value = Model> {
        prop::sample::select(Model::ALL.to_vec())
    }

    fn category() -> impl Strategy<Value = PricingCategory> {
        prop::sample::select(PricingCategory::ALL.to_vec())
    }

    fn window() -> impl Strategy<Value = WindowState> {
        prop::sample::select(WindowState::ALL.to_vec())
    }

    /// (destination index, category, template, window, manual, seconds after the previous).
    type Step = (usize, PricingCategory, bool, WindowState, bool, u32);

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            (
                0..3_usize,
                category(),
                any::<bool>(),
                window(),
                prop::bool::weighted(0.1),
                0..200_000_u32,
            ),
            1..60,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Over any policy and any run of deliveries: amounts never negative, `billable`
        /// exactly "costs something", a free type or a manual reply never charged, the same
        /// inputs always the same decision, and a replay of the ledger recomputes every
        /// entry exactly.
        #[test]
        fn rating_never_bills_the_free_and_always_recomputes(
            model in model(),
            rates in prop::array::uniform4(0..100_000_u32),
            bands in prop::collection::vec((0..500_u32, 0..40_u32), 0..5),
            free in 0..4_u8,
            steps in steps(),
        ) {
            let policy = Policy::parse(&policy_text(model, rates, &bands, free)).unwrap();
            let to = ["14155550001", "447700900123", "4915112345678"];
            let mut at = 1_796_083_200_i64;
            let mut charges = Vec::new();
            for (n, (dest, category, template, window, manual, wait)) in steps.into_iter().enumerate() {
                at += i64::from(wait);
                let mut c = charge_to(n as u32, to[dest], category, at);
                c.template = template;
                c.window = window;
                c.manual = manual;
                charges.push(c);
            }
            let mut usage = Usage::default();
            for c in &charges {
                let (d, conversation) = usage.rate(&policy, c);
                prop_assert!(d.amount >= Amount::ZERO);
                prop_assert_eq!(d.billable, d.amount > Amount::ZERO);
                if d.pricing_type != PricingType::Regular || c.manual {
                    prop_assert_eq!(d.amount, Amount::ZERO);
                }
                prop_assert_eq!(usage.rate(&policy, c).0, d);
                usage.record(c, &d, conversation.as_ref());
            }
            let entries = metered(&policy, charges);
            prop_assert_eq!(report::recompute(&entries, |_| Some(&policy)), vec![]);
            prop_assert_eq!(ledger::verify(&"7001".parse().unwrap(), &entries), Ok(()));
        }

        /// Volume bands never raise the price as the month's volume grows.
        #[test]
        fn volume_bands_are_monotone(
            bands in prop::collection::vec((0..500_u32, 0..40_u32), 1..6),
            counts in prop::collection::vec(0..5_000_u64, 2..20),
        ) {
            let policy = Policy::parse(&policy_text(Model::Volume, [1, 1, 1, 1], &bands, 0)).unwrap();
            let mut counts = counts;
            counts.sort_unstable();
            let rates: Vec<_> = counts.iter().map(|c| policy.bands.rate_at(*c).unwrap()).collect();
            for pair in rates.windows(2) {
                prop_assert!(pair[1] <= pair[0]);
            }
        }
    }
}

/// The README's policy examples are real policies: each reads (with the shared header where
/// the example leaves it out).
#[test]
fn the_readmes_policy_examples_read() {
    let readme = include_str!("../../../../README.md");
    let start = readme.find("## Billing").expect("a Billing section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut checked = 0;
    for block in section.split("```toml").skip(1) {
        let body = block.split("```").next().unwrap_or_default();
        if !body.contains("model = ") {
            continue;
        }
        let text = if body.contains("version = ") {
            body.to_owned()
        } else {
            format!(
                "version = \"readme\"\neffective_from = \"2026-01-01T00:00:00Z\"\ncurrency = \"USD\"\nprecision = 4\n{}",
                body.lines()
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        };
        if let Err(e) = Policy::parse(&text) {
            panic!("a README example does not read: {e}\n{text}");
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} examples found");
}
