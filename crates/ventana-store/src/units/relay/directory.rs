//! Business clocks, accounts, devices and the key directory.

use crate::relay::{AccountRecord, DeviceRecord};
use crate::sql::{Row, Sql, Tx, TxResult, args};
use ventana_core::rules::AccountKind;
use ventana_core::{BusinessClock, PhoneNumber, WabaId};

// --- businesses ----------------------------------------------------------------------------

pub(crate) async fn business_clock(
    tx: &mut impl Tx,
    waba: &WabaId,
) -> TxResult<Option<BusinessClock>> {
    let row = tx
        .query_opt(
            "SELECT sandbox, offset_secs FROM businesses WHERE waba_id = $1",
            args![waba.as_str()],
        )
        .await?;
    row.map(|row| {
        Ok(BusinessClock {
            sandbox: row.bool(0)?,
            offset_secs: row.int(1)?,
        })
    })
    .transpose()
}

// --- accounts and devices ------------------------------------------------------------------

/// The account columns [`account_from_row`] reads, first in a row.
macro_rules! account_columns {
    () => {
        "address, kind, waba_id, verified_name, created_at"
    };
}

pub(crate) async fn account(
    tx: &mut impl Tx,
    address: &PhoneNumber,
) -> TxResult<Option<AccountRecord>> {
    let row = tx
        .query_opt(
            concat!(
                "SELECT ",
                account_columns!(),
                " FROM accounts WHERE address = $1"
            ),
            args![address.digits()],
        )
        .await?;
    row.as_ref().map(account_from_row).transpose()
}

/// Reads the account and, on PostgreSQL, locks its row until the transaction ends: a
/// concurrent `accept` to it and a concurrent `add_device` to it wait (see
/// [`accept`](super::envelopes::accept) for why).
pub(crate) async fn lock_account(
    tx: &mut impl Tx,
    address: &PhoneNumber,
) -> TxResult<Option<AccountRecord>> {
    const LOCK: Sql = Sql::locking(
        concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE address = $1"
        ),
        "FOR NO KEY UPDATE",
    );
    let row = tx.row_opt(LOCK, args![address.digits()]).await?;
    row.as_ref().map(account_from_row).transpose()
}

/// Reads the five account columns, in `account_columns!`' order, from the start of a row.
fn account_from_row(row: &Row) -> TxResult<AccountRecord> {
    Ok(AccountRecord {
        address: row.parsed(0)?,
        kind: row.named(1, AccountKind::parse)?,
        waba_id: row.parsed_opt(2)?,
        verified_name: row.string_opt(3)?,
        created_at: row.time(4)?,
    })
}

/// The account's devices in device-id order.
pub(crate) async fn devices(
    tx: &mut impl Tx,
    account: &PhoneNumber,
) -> TxResult<Vec<DeviceRecord>> {
    let rows = tx
        .query(
            "SELECT account, device_id, curve25519, ed25519 FROM devices WHERE account = $1
             ORDER BY device_id",
            args![account.digits()],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(DeviceRecord {
                account: row.parsed(0)?,
                device_id: row.device_id(1)?,
                curve25519: row.string(2)?,
                ed25519: row.string(3)?,
            })
        })
        .collect()
}
