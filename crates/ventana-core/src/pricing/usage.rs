//! What rating reads besides the message: the business's usage so far this month (messages
//! counted toward tiers and bands, conversations opened) and its open conversations.
//!
//! The relay keeps these as counters and rows, for one read per delivery; [`Usage`] rebuilds
//! the same state from a business's ledger entries in order, so that any entry can be rated
//! again exactly as it was (`billing verify`) or under another policy (`billing rerate`).

use super::ledger::Charge;
use super::{CONVERSATION_SECS, WindowState};
use super::{ConversationNote, Decision, Delivery, Model, Policy, PricingCategory, PricingNote};
use crate::ids::{MessageId, WabaId};
use crate::time::UnixTime;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// A calendar month (UTC, on the business's clock): the period of volume tiers, bands, the
/// free conversation allowance and invoices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    pub year: i32,
    /// 1 to 12.
    pub month: u8,
}

impl Month {
    pub fn of(t: UnixTime) -> Self {
        let date = time::OffsetDateTime::from_unix_timestamp(t.0)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        Self {
            year: date.year(),
            month: u8::from(date.month()),
        }
    }

    /// Reads `2026-11`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a month like \"2026-11\"");
        let (year, month) = text.split_once('-').ok_or_else(bad)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        let month: u8 = month.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || year < 1970 {
            return Err(bad());
        }
        Ok(Self { year, month })
    }

    /// Its first second.
    pub fn start(self) -> UnixTime {
        let month = time::Month::try_from(self.month).unwrap_or(time::Month::January);
        let date = time::Date::from_calendar_date(self.year, month, 1).unwrap_or(time::Date::MIN);
        UnixTime(date.midnight().assume_utc().unix_timestamp())
    }

    pub fn next(self) -> Self {
        if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// The first second after it.
    pub fn end(self) -> UnixTime {
        self.next().start()
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The id of the conversation a message opens: derived from the business and the message, so
/// every node, and every re-rating, names it alike.
pub fn conversation_id(waba: &WabaId, opening: &MessageId) -> String {
    let digest = Sha256::new()
        .chain_update(b"ventana-conversation\0")
        .chain_update(waba.as_str().as_bytes())
        .chain_update(b"\0")
        .chain_update(opening.as_str().as_bytes())
        .finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The month's count a message is rated against: its category's for tiers, every category's
/// for volume bands.
pub fn month_count(
    model: Model,
    category: PricingCategory,
    counted: &BTreeMap<PricingCategory, u64>,
) -> u64 {
    if model == Model::Volume {
        counted.values().sum()
    } else {
        counted.get(&category).copied().unwrap_or(0)
    }
}

/// One business's usage, rebuilt from its ledger entries in order.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    counted: BTreeMap<Month, BTreeMap<PricingCategory, u64>>,
    opened: BTreeMap<Month, u64>,
    /// (destination digits, category) → the newest conversation (id, expiry).
    conversations: BTreeMap<(String, PricingCategory), (String, UnixTime)>,
}

impl Usage {
    /// Rates `charge`'s message under `policy` (already resolved for the business) as the
    /// relay does at delivery, given the entries recorded before it.
    pub fn rate(&self, policy: &Policy, charge: &Charge) -> (Decision, Option<ConversationNote>) {
        let month = Month::of(charge.delivered_at);
        let empty = BTreeMap::new();
        let counted = self.counted.get(&month).unwrap_or(&empty);
        let open = self
            .conversations
            .get(&(charge.destination.digits().to_owned(), charge.category))
            .filter(|(_, expires)| *expires > charge.delivered_at);
        let delivery = Delivery {
            category: charge.category,
            template: charge.template,
            window: charge.window,
            destination: &charge.destination,
            charged_this_month: month_count(policy.model, charge.category, counted),
            conversation_open: open.is_some(),
            conversations_this_month: self.opened.get(&month).copied().unwrap_or(0),
            manual: charge.manual,
        };
        let decision = policy.rate(&delivery);
        let conversation = conversation_note(
            &decision,
            &delivery,
            (&charge.waba_id, &charge.message_id, charge.delivered_at),
            open.cloned(),
        );
        (decision, conversation)
    }

    /// Records a rated message, so the next is rated after it.
    pub fn record(
        &mut self,
        charge: &Charge,
        decision: &Decision,
        conversation: Option<&ConversationNote>,
    ) {
        let month = Month::of(charge.delivered_at);
        if decision.counts() {
            *self
                .counted
                .entry(month)
                .or_default()
                .entry(charge.category)
                .or_default() += 1;
        }
        if decision.opens_conversation {
            *self.opened.entry(month).or_default() += 1;
            if let Some(c) = conversation {
                self.conversations.insert(
                    (charge.destination.digits().to_owned(), charge.category),
                    (c.id.clone(), c.expires_at),
                );
            }
        }
    }

    /// Rates every entry in order under `policy_of(entry)` (None: the entry is skipped and
    /// reported as `None`), recording each as it was actually charged, so that usage is what
    /// it was. Returns each entry's decision and note.
    pub fn replay<'p>(
        charges: &[Charge],
        mut policy_of: impl FnMut(&Charge) -> Option<&'p Policy>,
    ) -> Vec<Option<(Decision, PricingNote)>> {
        let mut usage = Self::default();
        charges
            .iter()
            .map(|charge| {
                let policy = policy_of(charge)?;
                let (decision, conversation) = usage.rate(policy, charge);
                usage.record(charge, &decision, conversation.as_ref());
                Some((decision, PricingNote::of(&decision, conversation)))
            })
            .collect()
    }
}

/// The conversation a decision belongs to, under `conversation_2022`: the one it opens (named
/// after the business and the `message` delivered at `at`), or the `open` one (id, expiry) it
/// rides on; none under the other models, for a manual reply or in a free entry point.
pub fn conversation_note(
    decision: &Decision,
    delivery: &Delivery<'_>,
    (waba, message, at): (&WabaId, &MessageId, UnixTime),
    open: Option<(String, UnixTime)>,
) -> Option<ConversationNote> {
    if decision.model != Model::Conversation2022
        || delivery.manual
        || delivery.window == WindowState::FreeEntryPoint
    {
        return None;
    }
    let (id, expires_at) = if decision.opens_conversation {
        (
            conversation_id(waba, message),
            at.plus_secs(CONVERSATION_SECS),
        )
    } else {
        open?
    };
    Some(ConversationNote {
        id,
        origin: delivery.category,
        expires_at,
    })
}
