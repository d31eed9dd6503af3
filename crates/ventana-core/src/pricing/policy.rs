//! A pricing policy as the operator writes it: TOML, checked whole before it is used.
//!
//! ```toml
//! version = "2026-12-example"              # a name for this version, kept with every charge
//! effective_from = "2026-12-01T00:00:00Z"  # messages delivered from then on are rated by it
//! model = "per_message_2025"               # window_2018 | conversation_2022 |
//!                                          # per_message_2025 | every_message | volume
//! currency = "USD"
//! precision = 4                            # amounts are written with at most 4 decimals
//! free_conversations_per_month = 1000      # conversation_2022 (before any [table])
//!
//! [rates.default]                          # per message (per conversation for conversations)
//! marketing = "0.0250"
//! utility = "0.0040"
//! authentication = "0.0035"
//! service = "0"
//!
//! [rates.country.44]                       # by calling code; the longest match wins
//! marketing = "0.0529"
//!
//! [[tiers.utility]]                        # per_message_2025: from this many messages of
//! from = 100000                            # the category in the month on
//! rate = "0.0030"
//!
//! [[bands]]                                # volume: the price from this many messages on
//! from = 0
//! rate = "0.0100"
//!
//! [business.102290129340398]               # one business's terms: any of model,
//! model = "volume"                         # free_conversations_per_month, rates, tiers
//! [business.102290129340398.rates.default] # and bands; what it leaves out is the base's
//! marketing = "0.0200"
//! ```
//!
//! Amounts are decimal strings, never TOML floats, and are kept as integers
//! ([`Amount`](super::Amount)). A mistake is reported with its line and the field's path.

use super::{Amount, Model, PricingCategory};
use crate::phone::PhoneNumber;
use crate::time::UnixTime;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use toml::Spanned;

/// The finest precision a card may declare: an amount stays far inside `i64`.
const MAX_PRECISION: u8 = 6;

/// A checked pricing policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub version: String,
    pub effective_from: UnixTime,
    pub model: Model,
    /// ISO 4217, e.g. `USD`.
    pub currency: String,
    /// Decimals of the currency unit the amounts count in.
    pub precision: u8,
    pub rates: RateCard,
    pub tiers: Tiers,
    pub bands: Bands,
    pub free_conversations: u64,
    /// Per-business terms (`[business.<waba_id>]`), each resolved into a whole policy over
    /// this one's fields; see [`Policy::for_business`].
    pub overrides: BTreeMap<String, Policy>,
}

/// Rates per category, by destination country (calling code) with a default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateCard {
    default: BTreeMap<PricingCategory, Amount>,
    /// Calling code (digits) → the rates that differ from the default there.
    countries: BTreeMap<String, BTreeMap<PricingCategory, Amount>>,
}

impl RateCard {
    /// The rate of `category` for a message to `destination`: the longest calling code the
    /// number starts with that sets this category, else the default.
    pub fn rate(&self, category: PricingCategory, destination: &PhoneNumber) -> Amount {
        let digits = destination.digits();
        self.countries
            .iter()
            .filter(|(code, _)| digits.starts_with(code.as_str()))
            .filter_map(|(code, rates)| Some((code.len(), *rates.get(&category)?)))
            .max_by_key(|(len, _)| *len)
            .map(|(_, rate)| rate)
            .or_else(|| self.default.get(&category).copied())
            .unwrap_or(Amount::ZERO)
    }
}

/// Monthly volume tiers per category (utility and authentication under per-message pricing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tiers(BTreeMap<PricingCategory, Bands>);

impl Tiers {
    /// The tier's rate after `count` messages of `category` this month, if the category has
    /// tiers and `count` reached the first.
    pub fn rate(&self, category: PricingCategory, count: u64) -> Option<Amount> {
        self.0.get(&category)?.rate_at(count)
    }
}

/// Prices by monthly volume: each band's rate holds from its `from` on; rates never rise as
/// volume grows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bands(Vec<(u64, Amount)>);

impl Bands {
    /// The rate of the message after `count` others this month.
    pub fn rate_at(&self, count: u64) -> Option<Amount> {
        self.0
            .iter()
            .rev()
            .find(|(from, _)| *from <= count)
            .map(|(_, rate)| *rate)
    }
}

/// Why a policy file was refused: where, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// 1-based line of the offending value, when known.
    pub line: Option<usize>,
    /// The field's path, e.g. `rates.country.44.marketing`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.field.is_empty()) {
            (Some(line), false) => write!(f, "line {line}, `{}`: {}", self.field, self.message),
            (Some(line), true) => write!(f, "line {line}: {}", self.message),
            (None, false) => write!(f, "`{}`: {}", self.field, self.message),
            (None, true) => f.write_str(&self.message),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: Spanned<String>,
    effective_from: Spanned<String>,
    model: Spanned<String>,
    currency: Spanned<String>,
    precision: Spanned<u8>,
    rates: RatesFile,
    #[serde(default)]
    tiers: BTreeMap<Spanned<String>, Vec<BandFile>>,
    #[serde(default)]
    bands: Vec<BandFile>,
    #[serde(default)]
    free_conversations_per_month: u64,
    #[serde(default)]
    business: BTreeMap<Spanned<String>, OverrideFile>,
}

/// `[business.<waba_id>]`: what differs for one business.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideFile {
    model: Option<Spanned<String>>,
    free_conversations_per_month: Option<u64>,
    #[serde(default)]
    rates: PartialRatesFile,
    #[serde(default)]
    tiers: BTreeMap<Spanned<String>, Vec<BandFile>>,
    bands: Option<Vec<BandFile>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialRatesFile {
    #[serde(default)]
    default: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    country: BTreeMap<Spanned<String>, BTreeMap<Spanned<String>, Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RatesFile {
    default: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    country: BTreeMap<Spanned<String>, BTreeMap<Spanned<String>, Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BandFile {
    from: Spanned<u64>,
    rate: Spanned<String>,
}

impl Policy {
    /// Reads and checks a policy file's text. Nothing of it is used unless all of it holds.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let line = |start: usize| Some(text[..start.min(text.len())].matches('\n').count() + 1);
        let at = |span: std::ops::Range<usize>, field: &str, message: String| PolicyError {
            line: line(span.start),
            field: field.to_owned(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| PolicyError {
            line: e.span().and_then(|s| line(s.start)),
            field: String::new(),
            message: e.message().trim().to_owned(),
        })?;

        let version = file.version.get_ref().trim().to_owned();
        if version.is_empty() {
            return Err(at(
                file.version.span(),
                "version",
                "must name the version".into(),
            ));
        }
        let effective_from = time::OffsetDateTime::parse(
            file.effective_from.get_ref(),
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| UnixTime(t.unix_timestamp()))
        .map_err(|e| {
            at(
                file.effective_from.span(),
                "effective_from",
                format!("not an RFC 3339 time like \"2026-12-01T00:00:00Z\": {e}"),
            )
        })?;
        let model_of = |name: &Spanned<String>, field: &str| {
            Model::parse(name.get_ref()).ok_or_else(|| {
                let known: Vec<_> = Model::ALL.iter().map(|m| m.as_str()).collect();
                at(
                    name.span(),
                    field,
                    format!("unknown model; one of {}", known.join(", ")),
                )
            })
        };
        let model = model_of(&file.model, "model")?;
        let currency = file.currency.get_ref().clone();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(at(
                file.currency.span(),
                "currency",
                "an ISO 4217 code such as USD".into(),
            ));
        }
        let precision = *file.precision.get_ref();
        if precision > MAX_PRECISION {
            return Err(at(
                file.precision.span(),
                "precision",
                format!("at most {MAX_PRECISION} decimals"),
            ));
        }
        let amount = |value: &Spanned<String>, field: &str| {
            Amount::parse(value.get_ref(), precision).map_err(|e| at(value.span(), field, e))
        };
        let rates_of = |table: &BTreeMap<Spanned<String>, Spanned<String>>, prefix: &str| {
            let mut rates = BTreeMap::new();
            for (name, value) in table {
                let field = format!("{prefix}.{}", name.get_ref());
                let category = PricingCategory::parse(name.get_ref()).ok_or_else(|| {
                    at(
                        name.span(),
                        &field,
                        "unknown category; one of marketing, utility, authentication, service"
                            .into(),
                    )
                })?;
                rates.insert(category, amount(value, &field)?);
            }
            Ok::<_, PolicyError>(rates)
        };
        type CountryTables = BTreeMap<Spanned<String>, BTreeMap<Spanned<String>, Spanned<String>>>;
        // Adds (or replaces, rate by rate) the per-country tables of `tables` into `into`.
        let countries_into = |into: &mut BTreeMap<String, BTreeMap<PricingCategory, Amount>>,
                              tables: &CountryTables,
                              prefix: &str| {
            for (code, table) in tables {
                let prefix = format!("{prefix}.{}", code.get_ref());
                let digits = code.get_ref();
                if !(1..=4).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(at(
                        code.span(),
                        &prefix,
                        "a calling code of 1 to 4 digits, e.g. 44".into(),
                    ));
                }
                into.entry(digits.clone())
                    .or_default()
                    .extend(rates_of(table, &prefix)?);
            }
            Ok::<_, PolicyError>(())
        };
        let bands_of = |list: &[BandFile], field: &str| {
            let mut bands: Vec<(u64, Amount)> = Vec::with_capacity(list.len());
            for (i, band) in list.iter().enumerate() {
                let field = format!("{field}[{i}]");
                let from = *band.from.get_ref();
                let rate = amount(&band.rate, &format!("{field}.rate"))?;
                if let Some((previous_from, previous_rate)) = bands.last() {
                    if from <= *previous_from {
                        return Err(at(
                            band.from.span(),
                            &format!("{field}.from"),
                            "bands must start at increasing volumes".into(),
                        ));
                    }
                    if rate > *previous_rate {
                        return Err(at(
                            band.rate.span(),
                            &format!("{field}.rate"),
                            "a larger volume may not cost more per message".into(),
                        ));
                    }
                }
                bands.push((from, rate));
            }
            Ok::<_, PolicyError>(Bands(bands))
        };
        let tiers_into = |into: &mut BTreeMap<PricingCategory, Bands>,
                          tables: &BTreeMap<Spanned<String>, Vec<BandFile>>,
                          prefix: &str| {
            for (name, list) in tables {
                let field = format!("{prefix}.{}", name.get_ref());
                let category = match PricingCategory::parse(name.get_ref()) {
                    Some(c @ (PricingCategory::Utility | PricingCategory::Authentication)) => c,
                    _ => {
                        return Err(at(
                            name.span(),
                            &field,
                            "tiers apply to utility and authentication".into(),
                        ));
                    }
                };
                into.insert(category, bands_of(list, &field)?);
            }
            Ok::<_, PolicyError>(())
        };
        let volume_needs_bands = |policy: &Policy, field: &str| {
            if policy.model == Model::Volume
                && policy.bands.0.first().map(|(from, _)| *from) != Some(0)
            {
                return Err(PolicyError {
                    line: None,
                    field: field.to_owned(),
                    message: "the volume model needs bands, the first from 0".into(),
                });
            }
            Ok(())
        };

        let default = rates_of(&file.rates.default, "rates.default")?;
        if let Some(missing) = PricingCategory::ALL
            .into_iter()
            .find(|c| !default.contains_key(c))
        {
            return Err(PolicyError {
                line: None,
                field: format!("rates.default.{}", missing.as_str()),
                message: "every category needs a default rate (\"0\" for free)".into(),
            });
        }
        let mut countries = BTreeMap::new();
        countries_into(&mut countries, &file.rates.country, "rates.country")?;
        let mut tiers = BTreeMap::new();
        tiers_into(&mut tiers, &file.tiers, "tiers")?;
        let mut base = Self {
            version,
            effective_from,
            model,
            currency,
            precision,
            rates: RateCard { default, countries },
            tiers: Tiers(tiers),
            bands: bands_of(&file.bands, "bands")?,
            free_conversations: file.free_conversations_per_month,
            overrides: BTreeMap::new(),
        };
        volume_needs_bands(&base, "bands")?;

        let mut overrides = BTreeMap::new();
        for (waba, terms) in &file.business {
            let prefix = format!("business.{}", waba.get_ref());
            if waba.get_ref().parse::<crate::ids::WabaId>().is_err() {
                return Err(at(waba.span(), &prefix, "not a WABA id (digits)".into()));
            }
            let mut policy = base.clone();
            if let Some(model) = &terms.model {
                policy.model = model_of(model, &format!("{prefix}.model"))?;
            }
            if let Some(free) = terms.free_conversations_per_month {
                policy.free_conversations = free;
            }
            policy.rates.default.extend(rates_of(
                &terms.rates.default,
                &format!("{prefix}.rates.default"),
            )?);
            countries_into(
                &mut policy.rates.countries,
                &terms.rates.country,
                &format!("{prefix}.rates.country"),
            )?;
            tiers_into(
                &mut policy.tiers.0,
                &terms.tiers,
                &format!("{prefix}.tiers"),
            )?;
            if let Some(bands) = &terms.bands {
                policy.bands = bands_of(bands, &format!("{prefix}.bands"))?;
            }
            volume_needs_bands(&policy, &format!("{prefix}.bands"))?;
            overrides.insert(waba.get_ref().clone(), policy);
        }
        base.overrides = overrides;
        Ok(base)
    }

    /// A policy file's identity: the SHA-256 of its text, in hex.
    pub fn digest(text: &str) -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The terms of one business: its `[business.<waba_id>]` override if the file has one,
    /// else this policy.
    pub fn for_business(&self, waba: &crate::ids::WabaId) -> &Self {
        self.overrides.get(waba.as_str()).unwrap_or(self)
    }
}
