//! What is read out of a ledger: a business's usage and invoice for a month, the recomputation
//! `billing verify` checks every entry against, and what-if re-rating.

use super::ledger::LedgerEntry;
use super::{Amount, CONVERSATION_SECS, Month, Policy, PricingCategory, Usage};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Money in one currency at one precision: amounts of different cards are never added up.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Currency {
    pub code: String,
    pub precision: u8,
}

/// A count of messages and what they cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub messages: u64,
    /// In the currency's smallest unit.
    pub amount: i64,
}

impl Tally {
    fn add(&mut self, amount: Amount) {
        self.messages += 1;
        self.amount += amount.0;
    }
}

/// One invoice line: messages of one category to one country at one rate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InvoiceLine {
    pub category: String,
    pub country: String,
    /// Per message, in the currency's smallest unit.
    pub rate: i64,
    pub messages: u64,
    pub amount: i64,
}

/// A business's month, per currency: totals by category, country and type (`regular`,
/// `free_customer_service`, `free_entry_point`, and `manual` for a small business's replies
/// by hand), the invoice's lines (charged messages only), and the policy versions used.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Statement {
    pub total: Tally,
    pub by_category: BTreeMap<String, Tally>,
    pub by_country: BTreeMap<String, Tally>,
    pub by_type: BTreeMap<String, Tally>,
    pub lines: Vec<InvoiceLine>,
    pub policy_versions: BTreeSet<String>,
}

/// A business's usage in `month`, from its ledger entries (any order; those delivered
/// outside the month are left out).
pub fn statement(month: Month, entries: &[LedgerEntry]) -> BTreeMap<Currency, Statement> {
    let mut out: BTreeMap<Currency, Statement> = BTreeMap::new();
    let mut lines: BTreeMap<Currency, BTreeMap<(String, String, i64), Tally>> = BTreeMap::new();
    for entry in entries {
        let c = &entry.charge;
        if Month::of(c.delivered_at) != month {
            continue;
        }
        let currency = Currency {
            code: c.currency.clone(),
            precision: c.precision,
        };
        let s = out.entry(currency.clone()).or_default();
        let kind = if c.manual {
            "manual"
        } else {
            c.pricing_type.as_str()
        };
        let country = c.destination.country().to_owned();
        s.total.add(c.amount);
        s.by_category
            .entry(c.category.as_str().to_owned())
            .or_default()
            .add(c.amount);
        s.by_country
            .entry(country.clone())
            .or_default()
            .add(c.amount);
        s.by_type.entry(kind.to_owned()).or_default().add(c.amount);
        s.policy_versions.insert(c.policy_version.clone());
        if c.amount.0 > 0 {
            lines
                .entry(currency)
                .or_default()
                .entry((c.category.as_str().to_owned(), country, c.rate.0))
                .or_default()
                .add(c.amount);
        }
    }
    for (currency, lines) in lines {
        if let Some(s) = out.get_mut(&currency) {
            s.lines = lines
                .into_iter()
                .map(|((category, country, rate), t)| InvoiceLine {
                    category,
                    country,
                    rate,
                    messages: t.messages,
                    amount: t.amount,
                })
                .collect();
        }
    }
    out
}

/// An entry whose stored charge is not what its inputs give under its policy version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub seq: u64,
    pub message_id: String,
    pub what: String,
}

/// Rates every entry of one business's chain again (in order, from its first) under the
/// policy version it names, and reports each whose stored rate, amount, type, model or
/// conversation differs, or whose version is unknown.
pub fn recompute<'p>(
    entries: &[LedgerEntry],
    policy_named: impl Fn(&str) -> Option<&'p Policy>,
) -> Vec<Mismatch> {
    let charges: Vec<_> = entries.iter().map(|e| e.charge.clone()).collect();
    let rated = Usage::replay(&charges, |c| {
        policy_named(&c.policy_version).map(|p| p.for_business(&c.waba_id))
    });
    let mut found = Vec::new();
    for (entry, rated) in entries.iter().zip(rated) {
        let c = &entry.charge;
        let mismatch = |what: String| Mismatch {
            seq: entry.seq,
            message_id: c.message_id.as_str().to_owned(),
            what,
        };
        let Some((decision, note)) = rated else {
            found.push(mismatch(format!(
                "names policy version {:?}, which is not loaded",
                c.policy_version
            )));
            continue;
        };
        let p = c.precision;
        let mut differs = Vec::new();
        if decision.amount != c.amount {
            differs.push(format!(
                "amount {} where the policy gives {}",
                c.amount.display(p),
                decision.amount.display(p)
            ));
        }
        if decision.rate != c.rate {
            differs.push(format!(
                "rate {} where the policy gives {}",
                c.rate.display(p),
                decision.rate.display(p)
            ));
        }
        if decision.pricing_type != c.pricing_type
            || decision.model != c.model
            || decision.category != c.category
        {
            differs.push(format!(
                "{} {} {} where the policy gives {} {} {}",
                c.model,
                c.category.as_str(),
                c.pricing_type.as_str(),
                decision.model,
                decision.category.as_str(),
                decision.pricing_type.as_str()
            ));
        }
        if note.conversation.as_ref().map(|n| &n.id) != c.conversation_id.as_ref() {
            differs.push("conversation differs from the one the policy gives".into());
        }
        if !differs.is_empty() {
            found.push(mismatch(differs.join("; ")));
        }
    }
    found
}

/// One category's totals before and after re-rating.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rerated {
    pub messages: u64,
    pub old_amount: i64,
    pub new_amount: i64,
}

/// What `month`'s messages would have cost under `policy`, next to what they were charged,
/// by category, in `policy`'s currency and precision (old amounts are summed only where
/// they were charged in the same). `entries` are the business's, in chain order, from at
/// least a conversation's length before the month (so conversations open at its start are
/// known). Nothing is written.
pub fn rerate(
    month: Month,
    entries: &[LedgerEntry],
    policy: &Policy,
) -> Result<BTreeMap<String, Rerated>, String> {
    let from = month.start().plus_secs(-CONVERSATION_SECS);
    let charges: Vec<_> = entries
        .iter()
        .map(|e| e.charge.clone())
        .filter(|c| c.delivered_at >= from && c.delivered_at < month.end())
        .collect();
    let rated = Usage::replay(&charges, |c| Some(policy.for_business(&c.waba_id)));
    let mut out: BTreeMap<String, Rerated> = BTreeMap::new();
    for category in PricingCategory::ALL {
        out.insert(category.as_str().to_owned(), Rerated::default());
    }
    for (c, rated) in charges.iter().zip(rated) {
        if Month::of(c.delivered_at) != month {
            continue;
        }
        if c.currency != policy.currency || c.precision != policy.precision {
            return Err(format!(
                "message {} was charged in {} at {} decimals; the policy prices in {} at {}",
                c.message_id, c.currency, c.precision, policy.currency, policy.precision
            ));
        }
        let Some((decision, _)) = rated else { continue };
        let line = out.entry(c.category.as_str().to_owned()).or_default();
        line.messages += 1;
        line.old_amount += c.amount.0;
        line.new_amount += decision.amount.0;
    }
    Ok(out)
}

/// The time buckets of the Cloud API's analytics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Granularity {
    HalfHour,
    Daily,
    Monthly,
}

impl Granularity {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "HALF_HOUR" => Some(Self::HalfHour),
            "DAILY" => Some(Self::Daily),
            "MONTHLY" => Some(Self::Monthly),
            _ => None,
        }
    }

    /// The bucket `t` falls in: `[start, end)`.
    pub fn bucket(
        self,
        t: crate::time::UnixTime,
    ) -> (crate::time::UnixTime, crate::time::UnixTime) {
        use crate::time::UnixTime;
        match self {
            Self::HalfHour => {
                let start = t.0 - t.0.rem_euclid(1800);
                (UnixTime(start), UnixTime(start + 1800))
            }
            Self::Daily => {
                let start = t.0 - t.0.rem_euclid(86_400);
                (UnixTime(start), UnixTime(start + 86_400))
            }
            Self::Monthly => {
                let month = Month::of(t);
                (month.start(), month.end())
            }
        }
    }
}

/// One group of a business's delivered messages for the Cloud API's `pricing_analytics` and
/// `conversation_analytics`: a time bucket, and the category, type and country they share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AnalyticsPoint {
    pub start: crate::time::UnixTime,
    pub end: crate::time::UnixTime,
    pub category: PricingCategory,
    pub pricing_type: super::PricingType,
    /// ISO 3166 alpha-2 of the destination.
    pub country: String,
    /// For conversations opened: `REGULAR` (charged), `FREE_TIER` (the month's free
    /// allowance) or `FREE_ENTRY_POINT`; `None` for messages that opened none.
    pub conversation_type: Option<String>,
    /// Messages delivered.
    pub volume: u64,
    /// Conversations opened.
    pub conversations: u64,
    /// In the currency's smallest unit.
    pub cost: i64,
    pub currency: String,
    pub precision: u8,
}

/// A business's entries delivered in `[from, until)`, grouped by `granularity` bucket,
/// category, type, country and currency.
pub fn analytics(
    entries: &[LedgerEntry],
    from: crate::time::UnixTime,
    until: crate::time::UnixTime,
    granularity: Granularity,
) -> Vec<AnalyticsPoint> {
    // (bucket start, category, type, country, conversation type, currency, precision).
    type Group<'e> = (i64, &'e str, &'e str, String, Option<&'e str>, &'e str, u8);
    let mut groups: BTreeMap<Group<'_>, AnalyticsPoint> = BTreeMap::new();
    for entry in entries {
        let c = &entry.charge;
        if c.delivered_at < from || c.delivered_at >= until {
            continue;
        }
        let (start, end) = granularity.bucket(c.delivered_at);
        let opened = c.conversation_id.as_deref()
            == Some(super::conversation_id(&c.waba_id, &c.message_id).as_str());
        let conversation_type = opened.then_some(if c.amount.0 > 0 {
            "REGULAR"
        } else if c.pricing_type == super::PricingType::FreeEntryPoint {
            "FREE_ENTRY_POINT"
        } else {
            "FREE_TIER"
        });
        let country = c.destination.country().to_owned();
        let key = (
            start.0,
            c.category.as_str(),
            c.pricing_type.as_str(),
            country.clone(),
            conversation_type,
            c.currency.as_str(),
            c.precision,
        );
        let point = groups.entry(key).or_insert_with(|| AnalyticsPoint {
            start,
            end,
            category: c.category,
            pricing_type: c.pricing_type,
            country,
            conversation_type: conversation_type.map(str::to_owned),
            volume: 0,
            conversations: 0,
            cost: 0,
            currency: c.currency.clone(),
            precision: c.precision,
        });
        point.volume += 1;
        point.conversations += u64::from(opened);
        point.cost += c.amount.0;
    }
    groups.into_values().collect()
}
