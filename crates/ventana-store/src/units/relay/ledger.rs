//! The billing ledger: appending a charge once per message, chained per business.
//!
//! On PostgreSQL [`append_charge`] takes [`Tx::lock`] on the business first, so appends
//! for one business (from any node) run one at a time: each reads the newest entry and
//! writes the next, and no two draw the same number. SQLite's one writer gives that order
//! without a lock.

use crate::ledger::Appended;
use crate::sql::{Row, Tx, TxResult, args, backend, big};
use ventana_core::pricing::ledger::EntryHash;
use ventana_core::pricing::{
    Charge, LedgerEntry, Model, PricingCategory, PricingType, WindowState,
};
use ventana_core::{MessageId, UnixTime, WabaId};

/// An entry's columns, read by [`entry_from_row`].
macro_rules! entry_columns {
    () => {
        "SELECT waba_id, seq, message_id, destination, delivered_at, policy_version, model,
                category, template, window_state, pricing_type, manual, rate, amount, currency,
                precision_digits, prev_hash, hash, conversation_id
         FROM ledger"
    };
}

pub(crate) async fn append_charge(tx: &mut impl Tx, charge: &Charge) -> TxResult<Appended> {
    let waba = charge.waba_id.as_str();
    tx.lock(&format!("ledger/{waba}")).await?;
    let earlier = tx
        .query_opt(
            concat!(entry_columns!(), " WHERE waba_id = $1 AND message_id = $2"),
            args![waba, charge.message_id.as_str()],
        )
        .await?;
    if let Some(row) = earlier {
        return Ok(Appended::Already(entry_from_row(&row)?));
    }
    let newest = tx
        .query_opt(
            "SELECT seq, hash FROM ledger WHERE waba_id = $1 ORDER BY seq DESC LIMIT 1",
            args![waba],
        )
        .await?;
    let prev = match newest {
        Some(row) => Some((row.unsigned(0)?, hash(&row, 1)?)),
        None => None,
    };
    let entry = LedgerEntry::after(prev, charge.clone());
    let c = &entry.charge;
    tx.execute(
        "INSERT INTO ledger
             (waba_id, seq, message_id, destination, delivered_at, policy_version, model,
              category, template, window_state, pricing_type, manual, rate, amount, currency,
              precision_digits, prev_hash, hash, conversation_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19)",
        args![
            waba,
            big(entry.seq)?,
            c.message_id.as_str(),
            c.destination.digits(),
            c.delivered_at,
            &c.policy_version,
            c.model.as_str(),
            c.category.as_str(),
            c.template,
            c.window.as_str(),
            c.pricing_type.as_str(),
            c.manual,
            c.rate.0,
            c.amount.0,
            &c.currency,
            i64::from(c.precision),
            &entry.prev_hash[..],
            &entry.hash[..],
            c.conversation_id.as_deref(),
        ],
    )
    .await?;
    Ok(Appended::New(entry))
}

/// The business's entries delivered in `[from, until)`, in order.
pub(crate) async fn delivered_between(
    tx: &mut impl Tx,
    waba: &WabaId,
    from: UnixTime,
    until: UnixTime,
) -> TxResult<Vec<LedgerEntry>> {
    let rows = tx
        .query(
            concat!(
                entry_columns!(),
                " WHERE waba_id = $1 AND delivered_at >= $2 AND delivered_at < $3 ORDER BY seq"
            ),
            args![waba.as_str(), from, until],
        )
        .await?;
    rows.iter().map(entry_from_row).collect()
}

/// The entry of one message, if it was charged.
pub(crate) async fn entry_of(
    tx: &mut impl Tx,
    waba: &WabaId,
    message: &MessageId,
) -> TxResult<Option<LedgerEntry>> {
    let row = tx
        .query_opt(
            concat!(entry_columns!(), " WHERE waba_id = $1 AND message_id = $2"),
            args![waba.as_str(), message.as_str()],
        )
        .await?;
    row.as_ref().map(entry_from_row).transpose()
}

/// Every business with a ledger entry.
pub(crate) async fn businesses(tx: &mut impl Tx) -> TxResult<Vec<WabaId>> {
    let rows = tx
        .query(
            "SELECT DISTINCT waba_id FROM ledger ORDER BY waba_id",
            args![],
        )
        .await?;
    rows.iter().map(|row| row.parsed(0)).collect()
}

pub(crate) async fn entries(
    tx: &mut impl Tx,
    waba: &WabaId,
    after_seq: u64,
    limit: u32,
) -> TxResult<Vec<LedgerEntry>> {
    // Past the column's range there is nothing left to read.
    let after_seq = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let rows = tx
        .query(
            concat!(
                entry_columns!(),
                " WHERE waba_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
            ),
            args![waba.as_str(), after_seq, limit],
        )
        .await?;
    rows.iter().map(entry_from_row).collect()
}

fn hash(row: &Row, idx: usize) -> TxResult<EntryHash> {
    row.blob(idx)?
        .try_into()
        .map_err(|_| backend(format!("column {idx} is not a 32-byte hash")))
}

/// Reads the columns of `entry_columns!`, in order. The stored fields are returned as they
/// are, even if they no longer match the hash: finding that is the verifier's job.
fn entry_from_row(row: &Row) -> TxResult<LedgerEntry> {
    Ok(LedgerEntry {
        seq: row.unsigned(1)?,
        charge: Charge {
            waba_id: row.parsed(0)?,
            message_id: row.parsed(2)?,
            destination: row.parsed(3)?,
            delivered_at: row.time(4)?,
            policy_version: row.string(5)?,
            model: row.named(6, Model::parse)?,
            category: row.named(7, PricingCategory::parse)?,
            template: row.bool(8)?,
            window: row.named(9, WindowState::parse)?,
            pricing_type: row.named(10, PricingType::parse)?,
            manual: row.bool(11)?,
            rate: ventana_core::pricing::Amount(row.int(12)?),
            amount: ventana_core::pricing::Amount(row.int(13)?),
            currency: row.string(14)?,
            precision: row.unsigned(15)?,
            conversation_id: row.string_opt(18)?,
        },
        prev_hash: hash(row, 16)?,
        hash: hash(row, 17)?,
    })
}
