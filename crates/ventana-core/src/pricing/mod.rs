//! Pricing: what a delivered business message costs, under a policy the operator writes as
//! data.
//!
//! - [`Amount`]: money as an integer count of the rate card's smallest unit (a card declares
//!   its precision, e.g. four decimals as Meta's cards have): never a float.
//! - [`policy`]: a [`Policy`] (model, currency, precision, rate card, tiers, bands) read from
//!   TOML and checked, with errors naming the line and the field.
//! - [`ledger`]: what a delivered message was charged ([`Charge`]) as a hash-chained
//!   [`LedgerEntry`] per business, and [`ledger::verify`], which finds the first entry
//!   changed, removed or inserted.
//! - [`Usage`]: the month's usage and open conversations a rating reads, rebuilt from a
//!   ledger (the relay keeps the same as counters); [`report`]: usage and invoices, the
//!   recomputation `billing verify` checks every entry against, what-if re-rating.
//! - [`PricingNote`]: how a status webhook describes a decision (`pricing`, `conversation`).
//! - [`Policy::rate`]: the decision for one delivered message ([`Delivery`] in,
//!   [`Decision`] out), a pure function of the policy and the message's circumstances, so
//!   the same inputs always give the same amount and any past charge can be recomputed.
//!
//! The models are the ones the Cloud API went through, plus the two the 2018 article
//! foresaw ([`Model`]).

pub mod ledger;
pub mod policy;
pub mod report;
mod usage;

pub use ledger::{BrokenLink, Charge, LedgerEntry};
pub use policy::{Policy, PolicyError};
pub use usage::{Month, Usage, conversation_id, conversation_note, month_count};

use crate::phone::PhoneNumber;
use crate::time::UnixTime;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The policy a fresh node runs until the operator configures one: per-message pricing (the
/// Cloud API's model since July 2025) with an example rate card. Its prices are examples for
/// trying Ventana out, not Meta's.
pub const EXAMPLE_POLICY: &str = include_str!("example-policy.toml");

/// How long a conversation lasts from the message that opens it (`conversation_2022`).
pub const CONVERSATION_SECS: i64 = 24 * 3600;

/// An amount in the smallest unit of its rate card (`precision` decimals of `currency`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub i64);

impl Amount {
    pub const ZERO: Self = Self(0);

    /// Parses a decimal written with at most `precision` decimals (`"0.0250"`, `"1"`,
    /// `"0.5"`), exactly; a negative amount, more decimals than the card keeps, or anything
    /// but digits and one point is refused.
    pub fn parse(text: &str, precision: u8) -> Result<Self, String> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (text.contains('.') && !digits(fraction)) {
            return Err(format!("{text:?} is not a decimal amount like \"0.0250\""));
        }
        if fraction.len() > usize::from(precision) {
            return Err(format!(
                "{text:?} has {} decimals; the card keeps {precision}",
                fraction.len()
            ));
        }
        let scale = 10_i64
            .checked_pow(u32::from(precision))
            .ok_or_else(|| format!("a precision of {precision} decimals is too fine"))?;
        let padded = format!("{fraction:0<width$}", width = usize::from(precision));
        let whole: i64 = whole
            .parse()
            .map_err(|_| format!("{text:?} is too large"))?;
        let fraction: i64 = if padded.is_empty() {
            0
        } else {
            padded
                .parse()
                .map_err(|_| format!("{text:?} is too large"))?
        };
        whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(fraction))
            .map(Self)
            .ok_or_else(|| format!("{text:?} is too large"))
    }

    /// The amount written with `precision` decimals, as [`Amount::parse`] reads it.
    pub fn display(self, precision: u8) -> String {
        let scale = 10_i64.pow(u32::from(precision));
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let scale = scale.unsigned_abs();
        if precision == 0 {
            return format!("{sign}{abs}");
        }
        format!(
            "{sign}{}.{:0width$}",
            abs / scale,
            abs % scale,
            width = usize::from(precision)
        )
    }
}

/// The pricing models a policy may select.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// 2018's Business API: everything inside the 24-hour window free; outside it, each
    /// delivered template charged by destination country.
    #[serde(rename = "window_2018")]
    Window2018,
    /// 2022's conversations: a 24-hour conversation opened by category is charged once,
    /// with a monthly free allowance of conversations per business; free-entry-point
    /// conversations (72 h) free.
    #[serde(rename = "conversation_2022")]
    Conversation2022,
    /// July 2025's per-message pricing: each delivered template charged by category, with
    /// monthly volume tiers; free-form in the window free, utility templates in an open
    /// window free, everything in a free-entry-point window free.
    #[serde(rename = "per_message_2025")]
    PerMessage2025,
    /// The article's "charge every reply": every delivered business message charged by
    /// category (free-form as `service`), window or not.
    EveryMessage,
    /// The article's "price by volume instead of by time": one price per message that falls
    /// by monthly volume band, window or not.
    Volume,
}

impl Model {
    pub const ALL: [Self; 5] = [
        Self::Window2018,
        Self::Conversation2022,
        Self::PerMessage2025,
        Self::EveryMessage,
        Self::Volume,
    ];

    /// The name in a policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Window2018 => "window_2018",
            Self::Conversation2022 => "conversation_2022",
            Self::PerMessage2025 => "per_message_2025",
            Self::EveryMessage => "every_message",
            Self::Volume => "volume",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// The status webhook's `pricing.pricing_model`: `CBP` for conversations, `PMP` for the
    /// per-message models (every model but conversations charges messages).
    pub fn webhook_name(self) -> &'static str {
        match self {
            Self::Conversation2022 => "CBP",
            _ => "PMP",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a message is, for pricing: a template's category, or `service` for free-form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PricingCategory {
    Marketing,
    Utility,
    Authentication,
    Service,
}

impl PricingCategory {
    pub const ALL: [Self; 4] = [
        Self::Marketing,
        Self::Utility,
        Self::Authentication,
        Self::Service,
    ];

    /// The name in a policy file and in the webhook's `pricing.category`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Marketing => "marketing",
            Self::Utility => "utility",
            Self::Authentication => "authentication",
            Self::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl From<crate::template::Category> for PricingCategory {
    fn from(c: crate::template::Category) -> Self {
        match c {
            crate::template::Category::Marketing => Self::Marketing,
            crate::template::Category::Utility => Self::Utility,
            crate::template::Category::Authentication => Self::Authentication,
        }
    }
}

/// Where the conversation with the customer stood when the message was delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WindowState {
    /// The customer wrote within the last 24 hours (the customer-service window).
    Open,
    /// The customer came through a free entry point (an ad, a page button) within 72 hours.
    FreeEntryPoint,
    /// Neither.
    Closed,
}

impl WindowState {
    pub const ALL: [Self; 3] = [Self::Open, Self::FreeEntryPoint, Self::Closed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::FreeEntryPoint => "free_entry_point",
            Self::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.as_str() == s)
    }
}

/// The webhook's `pricing.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PricingType {
    Regular,
    FreeCustomerService,
    FreeEntryPoint,
}

impl PricingType {
    pub const ALL: [Self; 3] = [
        Self::Regular,
        Self::FreeCustomerService,
        Self::FreeEntryPoint,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Regular => "regular",
            Self::FreeCustomerService => "free_customer_service",
            Self::FreeEntryPoint => "free_entry_point",
        }
    }
}

/// One delivered business message, as rating sees it.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    pub category: PricingCategory,
    /// A template message (rather than free-form).
    pub template: bool,
    pub window: WindowState,
    pub destination: &'a PhoneNumber,
    /// Messages of this business counted this month (charged as `regular`, under any policy
    /// version): in this category for tiers, in all categories for volume bands (see
    /// [`month_count`]). Counting them is the ledger's job; rating only reads the number.
    pub charged_this_month: u64,
    /// Conversations only: a conversation of this category with this customer is open, so
    /// the message rides on it.
    pub conversation_open: bool,
    /// Conversations only: conversations this business already opened this month.
    pub conversations_this_month: u64,
    /// A small business's reply sent by hand (the `app` tier): free whatever the model.
    pub manual: bool,
}

/// What one delivered message costs and how the status webhook describes it. `billable` is
/// exactly `amount > 0`; a free message has rate and amount zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub model: Model,
    pub category: PricingCategory,
    pub pricing_type: PricingType,
    pub billable: bool,
    /// The rate applied, in the card's smallest unit per message (or per conversation).
    pub rate: Amount,
    pub amount: Amount,
    /// Conversations only: this message opens a new conversation.
    pub opens_conversation: bool,
}

impl Decision {
    /// Whether the message counts toward the month's volume (tiers, bands): every message
    /// the model charges as `regular`, even where a tier or band makes it cost nothing.
    pub fn counts(&self) -> bool {
        self.pricing_type == PricingType::Regular
    }

    fn free(model: Model, category: PricingCategory, pricing_type: PricingType) -> Self {
        Self {
            model,
            category,
            pricing_type,
            billable: false,
            rate: Amount::ZERO,
            amount: Amount::ZERO,
            opens_conversation: false,
        }
    }

    fn charged(model: Model, category: PricingCategory, rate: Amount) -> Self {
        Self {
            model,
            category,
            pricing_type: PricingType::Regular,
            billable: rate > Amount::ZERO,
            rate,
            amount: rate,
            opens_conversation: false,
        }
    }
}

impl Policy {
    /// Rates one delivered message under this policy.
    pub fn rate(&self, d: &Delivery<'_>) -> Decision {
        use PricingCategory::{Authentication, Service, Utility};
        use WindowState::{Closed, FreeEntryPoint, Open};
        let model = self.model;
        let category = d.category;
        let free = |pricing_type| Decision::free(model, category, pricing_type);
        let card = || self.rates.rate(category, d.destination);
        if d.manual {
            return free(PricingType::FreeCustomerService);
        }
        match model {
            Model::Window2018 => match d.window {
                Open => free(PricingType::FreeCustomerService),
                FreeEntryPoint => free(PricingType::FreeEntryPoint),
                Closed if d.template => Decision::charged(model, category, card()),
                // Free-form outside the window is refused by the rules before it is sent;
                // were one delivered, it would not be a template and so not charged.
                Closed => free(PricingType::FreeCustomerService),
            },
            Model::Conversation2022 => {
                if d.window == FreeEntryPoint {
                    return free(PricingType::FreeEntryPoint);
                }
                if d.conversation_open {
                    return free(if category == Service {
                        PricingType::FreeCustomerService
                    } else {
                        PricingType::Regular
                    });
                }
                let mut decision = if d.conversations_this_month < self.free_conversations {
                    free(PricingType::FreeCustomerService)
                } else {
                    Decision::charged(model, category, card())
                };
                decision.opens_conversation = true;
                decision
            }
            Model::PerMessage2025 => match d.window {
                FreeEntryPoint => free(PricingType::FreeEntryPoint),
                Open if !d.template || category == Utility => {
                    free(PricingType::FreeCustomerService)
                }
                _ if !d.template => free(PricingType::FreeCustomerService),
                _ => {
                    let tiered = matches!(category, Utility | Authentication);
                    let rate = if tiered {
                        self.tiers
                            .rate(category, d.charged_this_month)
                            .unwrap_or_else(card)
                    } else {
                        card()
                    };
                    Decision::charged(model, category, rate)
                }
            },
            Model::EveryMessage => Decision::charged(model, category, card()),
            Model::Volume => {
                let rate = self
                    .bands
                    .rate_at(d.charged_this_month)
                    .unwrap_or(Amount::ZERO);
                Decision::charged(model, category, rate)
            }
        }
    }
}

/// How a status webhook describes what a message costs: the decision's public part, in the
/// Cloud API's terms. The relay writes it (on a `sent` answer and on delivery receipts, from
/// the same decision as the ledger entry); devices never do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricingNote {
    pub billable: bool,
    pub model: Model,
    pub category: PricingCategory,
    #[serde(rename = "type")]
    pub pricing_type: PricingType,
    /// Conversations only: the conversation the message belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationNote>,
}

/// What a message would cost, as a cost preview answers: the status webhook's pricing, the
/// rate and amount in the card's smallest unit, and the policy version that decided it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceQuote {
    pub pricing: PricingNote,
    pub rate: i64,
    pub amount: i64,
    pub currency: String,
    pub precision: u8,
    pub policy_version: String,
}

/// The webhook's `conversation` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationNote {
    pub id: String,
    /// `origin.type`: the category that opened it.
    pub origin: PricingCategory,
    pub expires_at: UnixTime,
}

impl PricingNote {
    pub fn of(decision: &Decision, conversation: Option<ConversationNote>) -> Self {
        Self {
            billable: decision.billable,
            model: decision.model,
            category: decision.category,
            pricing_type: decision.pricing_type,
            conversation,
        }
    }
}

#[cfg(test)]
mod tests;
