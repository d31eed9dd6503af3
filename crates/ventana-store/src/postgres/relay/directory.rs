//! Business clocks, accounts, devices and the key directory.

use crate::postgres::db::{
    TxResult, backend, conflict, device_id, execute, get, named, parsed, parsed_opt, query,
    query_one, query_opt, time, unsigned,
};
use crate::relay::{AccountRecord, ClaimedPreKey, DeviceRecord, NewDevice};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use ventana_core::protocol::SignedKey;
use ventana_core::rules::AccountKind;
use ventana_core::{BusinessClock, DeviceId, PhoneNumber, WabaId};

// --- businesses ----------------------------------------------------------------------------

pub(super) async fn ensure_business(
    tx: &impl GenericClient,
    waba: &WabaId,
    sandbox: bool,
) -> TxResult<BusinessClock> {
    // A concurrent first insert makes this one wait for it, then do nothing; the read below
    // is a later statement, so it sees that row.
    execute(
        tx,
        "INSERT INTO businesses (waba_id, sandbox) VALUES ($1, $2) ON CONFLICT (waba_id) DO NOTHING",
        &[&waba.as_str(), &sandbox],
    )
    .await?;
    business_clock(tx, waba)
        .await?
        .ok_or_else(|| backend("the business row just ensured is missing"))
}

pub(super) async fn business_clock(
    c: &impl GenericClient,
    waba: &WabaId,
) -> TxResult<Option<BusinessClock>> {
    let row = query_opt(
        c,
        "SELECT sandbox, offset_secs FROM businesses WHERE waba_id = $1",
        &[&waba.as_str()],
    )
    .await?;
    row.map(|row| {
        Ok(BusinessClock {
            sandbox: get(&row, 0)?,
            offset_secs: get(&row, 1)?,
        })
    })
    .transpose()
}

pub(super) async fn set_business_clock(
    tx: &impl GenericClient,
    waba: &WabaId,
    clock: BusinessClock,
) -> TxResult<()> {
    execute(
        tx,
        "INSERT INTO businesses (waba_id, sandbox, offset_secs) VALUES ($1, $2, $3)
         ON CONFLICT (waba_id) DO UPDATE
         SET sandbox = excluded.sandbox, offset_secs = excluded.offset_secs",
        &[&waba.as_str(), &clock.sandbox, &clock.offset_secs],
    )
    .await?;
    Ok(())
}

// --- accounts and devices ------------------------------------------------------------------

const ACCOUNT_COLUMNS: &str = "address, kind, waba_id, verified_name, created_at";

pub(super) async fn account(
    c: &impl GenericClient,
    address: &PhoneNumber,
) -> TxResult<Option<AccountRecord>> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE address = $1");
    let row = query_opt(c, &sql, &[&address.digits()]).await?;
    row.as_ref().map(account_from_row).transpose()
}

/// Reads the five account columns, in `ACCOUNT_COLUMNS`' order, from the start of a row.
fn account_from_row(row: &Row) -> TxResult<AccountRecord> {
    Ok(AccountRecord {
        address: parsed(row, 0)?,
        kind: named(row, 1, AccountKind::parse)?,
        waba_id: parsed_opt(row, 2)?,
        verified_name: get(row, 3)?,
        created_at: time(row, 4)?,
    })
}

/// Registers the device, creating its account first if needed. Two registrations for a new
/// account at once both get a device: the second `INSERT` waits for the first and then does
/// nothing, and the counter's `UPDATE` takes the row lock, so ids are handed out one by one.
pub(super) async fn add_device(tx: &impl GenericClient, device: &NewDevice) -> TxResult<DeviceId> {
    let new = &device.account;
    let address = new.address.digits();
    execute(
        tx,
        "INSERT INTO accounts (address, kind, waba_id, verified_name, created_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (address) DO NOTHING",
        &[
            &address,
            &new.kind.as_str(),
            &new.waba_id.as_ref().map(WabaId::as_str),
            &new.verified_name,
            &new.created_at.0,
        ],
    )
    .await?;
    let row = query_one(
        tx,
        "UPDATE accounts SET next_device_id = next_device_id + 1 WHERE address = $1
         RETURNING next_device_id - 1, kind, waba_id",
        &[&address],
    )
    .await?;
    let kind = named(&row, 1, AccountKind::parse)?;
    let waba_id: Option<WabaId> = parsed_opt(&row, 2)?;
    if kind != new.kind || waba_id != new.waba_id {
        // Rolling back undoes the counter's step.
        return Err(conflict(
            crate::ConflictKind::Exists,
            format!(
                "account {} exists as another kind of account or for another business",
                new.address
            ),
        ));
    }
    let id = device_id(&row, 0)?;
    execute(
        tx,
        "INSERT INTO devices (account, device_id, token_hash, curve25519, ed25519)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &address,
            &i64::from(id.0),
            &device.token_hash,
            &device.curve25519,
            &device.ed25519,
        ],
    )
    .await?;
    add_one_time_keys(tx, &new.address, id, &device.one_time_keys).await?;
    if let Some(key) = &device.fallback_key {
        replace_fallback_key(tx, &new.address, id, key).await?;
    }
    Ok(id)
}

pub(super) async fn device_by_token(
    c: &impl GenericClient,
    token_hash: &str,
) -> TxResult<Option<(AccountRecord, DeviceId)>> {
    let row = query_opt(
        c,
        "SELECT a.address, a.kind, a.waba_id, a.verified_name, a.created_at, d.device_id
         FROM devices d JOIN accounts a ON a.address = d.account
         WHERE d.token_hash = $1",
        &[&token_hash],
    )
    .await?;
    row.map(|row| Ok((account_from_row(&row)?, device_id(&row, 5)?)))
        .transpose()
}

/// The account's devices in device-id order.
pub(super) async fn devices(
    c: &impl GenericClient,
    account: &PhoneNumber,
) -> TxResult<Vec<DeviceRecord>> {
    let rows = query(
        c,
        "SELECT account, device_id, curve25519, ed25519 FROM devices WHERE account = $1
         ORDER BY device_id",
        &[&account.digits()],
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok(DeviceRecord {
                account: parsed(row, 0)?,
                device_id: device_id(row, 1)?,
                curve25519: get(row, 2)?,
                ed25519: get(row, 3)?,
            })
        })
        .collect()
}

// --- keys ----------------------------------------------------------------------------------

fn signed_key(row: &Row) -> TxResult<SignedKey> {
    Ok(SignedKey {
        key_id: get(row, 0)?,
        key: get(row, 1)?,
        signature: get(row, 2)?,
    })
}

/// Adds keys in upload order. A key id seen before (claimed or not) is skipped if it carries
/// the same key, and is a conflict otherwise, which rolls back the whole upload. A concurrent
/// upload of the same id makes the `INSERT` wait and then skip, and the read after it sees
/// the other upload's row.
pub(super) async fn add_one_time_keys(
    tx: &impl GenericClient,
    account: &PhoneNumber,
    device: DeviceId,
    keys: &[SignedKey],
) -> TxResult<()> {
    let device_id = i64::from(device.0);
    for key in keys {
        let added = execute(
            tx,
            "INSERT INTO one_time_keys (account, device_id, key_id, key, signature)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (account, device_id, key_id) DO NOTHING",
            &[
                &account.digits(),
                &device_id,
                &key.key_id,
                &key.key,
                &key.signature,
            ],
        )
        .await?;
        if added == 0 {
            let known = query_one(
                tx,
                "SELECT key, signature FROM one_time_keys
                 WHERE account = $1 AND device_id = $2 AND key_id = $3",
                &[&account.digits(), &device_id, &key.key_id],
            )
            .await?;
            let (stored_key, stored_signature): (String, String) =
                (get(&known, 0)?, get(&known, 1)?);
            if stored_key != key.key || stored_signature != key.signature {
                return Err(conflict(
                    crate::ConflictKind::Exists,
                    format!(
                        "one-time key {} of device {device} was uploaded before with another value",
                        key.key_id
                    ),
                ));
            }
        }
    }
    Ok(())
}

pub(super) async fn replace_fallback_key(
    tx: &impl GenericClient,
    account: &PhoneNumber,
    device: DeviceId,
    key: &SignedKey,
) -> TxResult<()> {
    execute(
        tx,
        "INSERT INTO fallback_keys (account, device_id, key_id, key, signature, used)
         VALUES ($1, $2, $3, $4, $5, FALSE)
         ON CONFLICT (account, device_id) DO UPDATE
         SET key_id = excluded.key_id, key = excluded.key, signature = excluded.signature,
             used = FALSE",
        &[
            &account.digits(),
            &i64::from(device.0),
            &key.key_id,
            &key.key,
            &key.signature,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn unclaimed_count(
    c: &impl GenericClient,
    account: &PhoneNumber,
    device: DeviceId,
) -> TxResult<u64> {
    let row = query_one(
        c,
        "SELECT count(*) FROM one_time_keys WHERE account = $1 AND device_id = $2 AND NOT claimed",
        &[&account.digits(), &i64::from(device.0)],
    )
    .await?;
    unsigned(&row, 0)
}

/// Claims the oldest unclaimed one-time key of each device (of those in `only`), or else its
/// fallback key. The key is picked `FOR UPDATE SKIP LOCKED`: a key another claim has locked
/// but not yet committed is passed over rather than waited for, and one it has committed no
/// longer matches `NOT claimed` when rechecked, so no key is ever handed out twice, on any
/// node. (Were the other claim to roll back, its key simply stays for the next one.)
pub(super) async fn claim_pre_keys(
    tx: &impl GenericClient,
    account: &PhoneNumber,
    only: Option<&[DeviceId]>,
) -> TxResult<Vec<ClaimedPreKey>> {
    let mut claimed = Vec::new();
    for device in devices(tx, account).await? {
        if only.is_some_and(|only| !only.contains(&device.device_id)) {
            continue;
        }
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
            [&account.digits(), &i64::from(device.device_id.0)];
        let one_time = query_opt(
            tx,
            "UPDATE one_time_keys SET claimed = TRUE
             WHERE seq = (SELECT seq FROM one_time_keys
                          WHERE account = $1 AND device_id = $2 AND NOT claimed
                          ORDER BY seq LIMIT 1
                          FOR UPDATE SKIP LOCKED)
             RETURNING key_id, key, signature",
            &params,
        )
        .await?;
        if let Some(row) = one_time {
            claimed.push(ClaimedPreKey {
                device,
                key: signed_key(&row)?,
                fallback: false,
            });
            continue;
        }
        let fallback = query_opt(
            tx,
            "UPDATE fallback_keys SET used = TRUE WHERE account = $1 AND device_id = $2
             RETURNING key_id, key, signature",
            &params,
        )
        .await?;
        if let Some(row) = fallback {
            claimed.push(ClaimedPreKey {
                device,
                key: signed_key(&row)?,
                fallback: true,
            });
        }
    }
    Ok(claimed)
}
