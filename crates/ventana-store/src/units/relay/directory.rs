//! Business clocks, accounts, devices and the key directory.

use crate::ConflictKind;
use crate::relay::{AccountRecord, ClaimedPreKey, DeviceRecord, NewDevice, TierEvent, WakeReason};
use crate::sql::{Row, Sql, Tx, TxResult, args, backend, conflict};
use ventana_core::protocol::SignedKey;
use ventana_core::rules::{AccountKind, BusinessTier};
use ventana_core::{BusinessClock, DeviceId, PhoneNumber, WabaId};

/// A statement's round trip: the store answers.
pub(crate) async fn ping(tx: &mut impl Tx) -> TxResult<()> {
    tx.query_one("SELECT 1", args![]).await.map(drop)
}

// --- businesses ----------------------------------------------------------------------------

pub(crate) async fn ensure_business(
    tx: &mut impl Tx,
    waba: &WabaId,
    sandbox: bool,
) -> TxResult<BusinessClock> {
    // On PostgreSQL a concurrent first insert makes this one wait for it, then do nothing;
    // the read below is a later statement, so it sees that row.
    tx.execute(
        "INSERT INTO businesses (waba_id, sandbox) VALUES ($1, $2)
         ON CONFLICT (waba_id) DO NOTHING",
        args![waba.as_str(), sandbox],
    )
    .await?;
    business_clock(tx, waba)
        .await?
        .ok_or_else(|| backend("the business row just ensured is missing"))
}

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

pub(crate) async fn set_business_clock(
    tx: &mut impl Tx,
    waba: &WabaId,
    clock: BusinessClock,
) -> TxResult<()> {
    tx.execute(
        "INSERT INTO businesses (waba_id, sandbox, offset_secs) VALUES ($1, $2, $3)
         ON CONFLICT (waba_id) DO UPDATE
         SET sandbox = excluded.sandbox, offset_secs = excluded.offset_secs",
        args![waba.as_str(), clock.sandbox, clock.offset_secs],
    )
    .await?;
    Ok(())
}

pub(crate) async fn business_tier(
    tx: &mut impl Tx,
    waba: &WabaId,
) -> TxResult<Option<BusinessTier>> {
    let row = tx
        .query_opt(
            "SELECT tier FROM businesses WHERE waba_id = $1",
            args![waba.as_str()],
        )
        .await?;
    row.map(|row| row.named(0, BusinessTier::parse)).transpose()
}

/// Under the business row's lock, so two changes at once are audited in the order applied.
pub(crate) async fn set_business_tier(
    tx: &mut impl Tx,
    waba: &WabaId,
    change: &TierEvent,
) -> TxResult<Option<bool>> {
    const CURRENT: Sql = Sql::locking(
        "SELECT tier FROM businesses WHERE waba_id = $1",
        "FOR NO KEY UPDATE",
    );
    let Some(row) = tx.row_opt(CURRENT, args![waba.as_str()]).await? else {
        return Ok(None);
    };
    let previous = row.named(0, BusinessTier::parse)?;
    if previous == change.tier {
        return Ok(Some(false));
    }
    tx.execute(
        "UPDATE businesses SET tier = $2 WHERE waba_id = $1",
        args![waba.as_str(), change.tier.as_str()],
    )
    .await?;
    tx.execute(
        "INSERT INTO tier_events (waba_id, at, tier, previous, actor, reason)
         VALUES ($1, $2, $3, $4, $5, $6)",
        args![
            waba.as_str(),
            change.at,
            change.tier.as_str(),
            previous.as_str(),
            &change.actor,
            change.reason.as_deref(),
        ],
    )
    .await?;
    Ok(Some(true))
}

pub(crate) async fn tier_events(tx: &mut impl Tx, waba: &WabaId) -> TxResult<Vec<TierEvent>> {
    let rows = tx
        .query(
            "SELECT at, tier, previous, actor, reason FROM tier_events WHERE waba_id = $1
             ORDER BY seq",
            args![waba.as_str()],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(TierEvent {
                at: row.time(0)?,
                tier: row.named(1, BusinessTier::parse)?,
                previous: row.named(2, BusinessTier::parse)?,
                actor: row.string(3)?,
                reason: row.string_opt(4)?,
            })
        })
        .collect()
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

/// Registers the device, creating its account first if needed. On PostgreSQL, two
/// registrations for a new account at once both get a device: the second `INSERT` waits for
/// the first and then does nothing, and the counter's `UPDATE` takes the row lock, so ids are
/// handed out one by one.
pub(crate) async fn add_device(tx: &mut impl Tx, device: &NewDevice) -> TxResult<DeviceId> {
    let new = &device.account;
    let address = new.address.digits();
    tx.execute(
        "INSERT INTO accounts (address, kind, waba_id, verified_name, created_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (address) DO NOTHING",
        args![
            address,
            new.kind.as_str(),
            new.waba_id.as_ref().map(WabaId::as_str),
            new.verified_name.as_ref(),
            new.created_at,
        ],
    )
    .await?;
    let row = tx
        .query_one(
            "UPDATE accounts SET next_device_id = next_device_id + 1 WHERE address = $1
             RETURNING next_device_id - 1, kind, waba_id",
            args![address],
        )
        .await?;
    let kind = row.named(1, AccountKind::parse)?;
    let waba_id: Option<WabaId> = row.parsed_opt(2)?;
    if kind != new.kind || waba_id != new.waba_id {
        // Rolling back undoes the counter's step.
        return Err(conflict(
            ConflictKind::Exists,
            format!(
                "account {} exists as another kind of account or for another business",
                new.address
            ),
        ));
    }
    let id = row.device_id(0)?;
    if let Some(max) = device.max_devices {
        // The account row's update above holds its lock on PostgreSQL: two registrations of
        // one number count one after the other.
        let row = tx
            .query_one(
                "SELECT count(*) FROM devices WHERE account = $1",
                args![address],
            )
            .await?;
        let count: u64 = row.unsigned(0)?;
        if count >= max {
            return Err(conflict(
                ConflictKind::Limit,
                format!(
                    "{} has {count} devices registered, as many as a number may",
                    new.address
                ),
            ));
        }
    }
    tx.execute(
        "INSERT INTO devices (account, device_id, token_hash, curve25519, ed25519)
         VALUES ($1, $2, $3, $4, $5)",
        args![
            address,
            id,
            &device.token_hash,
            &device.curve25519,
            &device.ed25519
        ],
    )
    .await?;
    add_one_time_keys(tx, &new.address, id, &device.one_time_keys).await?;
    if let Some(key) = &device.fallback_key {
        replace_fallback_key(tx, &new.address, id, key).await?;
    }
    Ok(id)
}

pub(crate) async fn device_by_token(
    tx: &mut impl Tx,
    token_hash: &str,
) -> TxResult<Option<(AccountRecord, DeviceId)>> {
    let row = tx
        .query_opt(
            "SELECT a.address, a.kind, a.waba_id, a.verified_name, a.created_at, d.device_id
             FROM devices d JOIN accounts a ON a.address = d.account
             WHERE d.token_hash = $1",
            args![token_hash],
        )
        .await?;
    row.map(|row| Ok((account_from_row(&row)?, row.device_id(5)?)))
        .transpose()
}

// --- keys ----------------------------------------------------------------------------------

fn signed_key(row: &Row) -> TxResult<SignedKey> {
    Ok(SignedKey {
        key_id: row.string(0)?,
        key: row.string(1)?,
        signature: row.string(2)?,
    })
}

/// Adds the one-time keys, replaces the fallback key if given, and answers how many one-time
/// keys are left unclaimed.
pub(crate) async fn upload_keys(
    tx: &mut impl Tx,
    account: &PhoneNumber,
    device: DeviceId,
    one_time_keys: &[SignedKey],
    fallback_key: Option<&SignedKey>,
    max_unclaimed: u64,
) -> TxResult<u64> {
    // Uploads of one device one at a time across nodes, so that two cannot each count only
    // their own keys and pass the limit together (PostgreSQL; SQLite has one writer).
    tx.lock(&format!("keys/{}/{}", account.digits(), device))
        .await?;
    add_one_time_keys(tx, account, device, one_time_keys).await?;
    if let Some(key) = fallback_key {
        replace_fallback_key(tx, account, device, key).await?;
    }
    let unclaimed = unclaimed_count(tx, account, device).await?;
    if unclaimed > max_unclaimed {
        // Counted after adding, so keys uploaded again (skipped) do not count twice; the
        // error rolls the whole upload back.
        return Err(conflict(
            ConflictKind::Limit,
            format!(
                "the upload would leave {unclaimed} one-time keys unclaimed; a device may keep {max_unclaimed}"
            ),
        ));
    }
    Ok(unclaimed)
}

/// Adds keys in upload order. A key id seen before (claimed or not) is skipped if it carries
/// the same key, and is a conflict otherwise, which rolls back the whole upload. On
/// PostgreSQL a concurrent upload of the same id makes the `INSERT` wait and then skip, and
/// the read after it sees the other upload's row.
async fn add_one_time_keys(
    tx: &mut impl Tx,
    account: &PhoneNumber,
    device: DeviceId,
    keys: &[SignedKey],
) -> TxResult<()> {
    for key in keys {
        let added = tx
            .execute(
                "INSERT INTO one_time_keys (account, device_id, key_id, key, signature)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (account, device_id, key_id) DO NOTHING",
                args![
                    account.digits(),
                    device,
                    &key.key_id,
                    &key.key,
                    &key.signature
                ],
            )
            .await?;
        if added == 0 {
            let known = tx
                .query_one(
                    "SELECT key, signature FROM one_time_keys
                     WHERE account = $1 AND device_id = $2 AND key_id = $3",
                    args![account.digits(), device, &key.key_id],
                )
                .await?;
            if known.text(0)? != key.key || known.text(1)? != key.signature {
                return Err(conflict(
                    ConflictKind::Exists,
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

async fn replace_fallback_key(
    tx: &mut impl Tx,
    account: &PhoneNumber,
    device: DeviceId,
    key: &SignedKey,
) -> TxResult<()> {
    tx.execute(
        "INSERT INTO fallback_keys (account, device_id, key_id, key, signature, used)
         VALUES ($1, $2, $3, $4, $5, FALSE)
         ON CONFLICT (account, device_id) DO UPDATE
         SET key_id = excluded.key_id, key = excluded.key, signature = excluded.signature,
             used = FALSE",
        args![
            account.digits(),
            device,
            &key.key_id,
            &key.key,
            &key.signature
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn unclaimed_count(
    tx: &mut impl Tx,
    account: &PhoneNumber,
    device: DeviceId,
) -> TxResult<u64> {
    let row = tx
        .query_one(
            "SELECT count(*) FROM one_time_keys
             WHERE account = $1 AND device_id = $2 AND NOT claimed",
            args![account.digits(), device],
        )
        .await?;
    row.unsigned(0)
}

/// Claims the oldest unclaimed one-time key of each device (of those in `only`), or else its
/// fallback key, and wakes the devices whose keys were taken (so they upload more).
///
/// On PostgreSQL the key is picked `FOR UPDATE SKIP LOCKED`: a key another claim has locked
/// but not yet committed is passed over rather than waited for, and one it has committed no
/// longer matches `NOT claimed` when rechecked, so no key is ever handed out twice, on any
/// node. (Were the other claim to roll back, its key simply stays for the next one.)
pub(crate) async fn claim_pre_keys(
    tx: &mut impl Tx,
    account: &PhoneNumber,
    only: Option<&[DeviceId]>,
) -> TxResult<Vec<ClaimedPreKey>> {
    const CLAIM_ONE_TIME: Sql = Sql::dialects(
        "UPDATE one_time_keys SET claimed = TRUE
         WHERE seq = (SELECT seq FROM one_time_keys
                      WHERE account = $1 AND device_id = $2 AND NOT claimed
                      ORDER BY seq LIMIT 1)
         RETURNING key_id, key, signature",
        "UPDATE one_time_keys SET claimed = TRUE
         WHERE seq = (SELECT seq FROM one_time_keys
                      WHERE account = $1 AND device_id = $2 AND NOT claimed
                      ORDER BY seq LIMIT 1
                      FOR UPDATE SKIP LOCKED)
         RETURNING key_id, key, signature",
    );
    let mut claimed = Vec::new();
    for device in devices(tx, account).await? {
        if only.is_some_and(|only| !only.contains(&device.device_id)) {
            continue;
        }
        let key = args![account.digits(), device.device_id];
        if let Some(row) = tx.row_opt(CLAIM_ONE_TIME, key).await? {
            claimed.push(ClaimedPreKey {
                key: signed_key(&row)?,
                device,
                fallback: false,
            });
            continue;
        }
        let fallback = tx
            .query_opt(
                "UPDATE fallback_keys SET used = TRUE WHERE account = $1 AND device_id = $2
                 RETURNING key_id, key, signature",
                key,
            )
            .await?;
        if let Some(row) = fallback {
            claimed.push(ClaimedPreKey {
                key: signed_key(&row)?,
                device,
                fallback: true,
            });
        }
    }
    let woken: Vec<DeviceId> = claimed.iter().map(|c| c.device.device_id).collect();
    tx.wake(account, &woken, WakeReason::KeysClaimed).await?;
    Ok(claimed)
}
