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
