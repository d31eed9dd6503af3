//! [`RelayStore`] on SQLite: verification codes, business clocks, accounts, devices and keys
//! here; envelopes and the rules in [`envelopes`]; the template registry
//! ([`TemplateStore`](crate::TemplateStore)) in [`templates`].

mod templates;

use super::db::{Db, Migration, TxResult, backend, conflict, named, parsed, parsed_opt};
use crate::StoreResult;
use crate::relay::{
    Accepted, AccountRecord, ClaimedPreKey, DeviceRecord, NewDevice, NewSubmission, Refusal,
    RelayStore, StoredEnvelope, VerificationOutcome, WakeReason, Wakeup,
};
use crate::units::relay::envelopes;
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::path::Path;
use tokio::sync::broadcast;
use ventana_core::protocol::SignedKey;
use ventana_core::rules::AccountKind;
use ventana_core::{BusinessClock, DeviceId, MessageId, PhoneNumber, UnixTime, WabaId};

const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_init",
        sql: include_str!("../../migrations/sqlite/relay/0001_init.sql"),
    },
    Migration {
        name: "0002_templates",
        sql: include_str!("../../migrations/sqlite/relay/0002_templates.sql"),
    },
    Migration {
        name: "0003_template_envelopes",
        sql: include_str!("../../migrations/sqlite/relay/0003_template_envelopes.sql"),
    },
    Migration {
        name: "0004_resends",
        sql: include_str!("../../migrations/sqlite/relay/0004_resends.sql"),
    },
    Migration {
        name: "0005_user_address",
        sql: include_str!("../../migrations/sqlite/relay/0005_user_address.sql"),
    },
];

/// Wrong guesses allowed per number per window, across reissued codes.
const MAX_CODE_ATTEMPTS: u32 = 5;
/// Codes issued per number per window.
const MAX_CODES_PER_WINDOW: u32 = 5;
/// The window both limits count in.
const VERIFICATION_WINDOW_SECS: i64 = 3600;

/// The relay's store in one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteRelayStore {
    db: Db,
}

impl SqliteRelayStore {
    /// Opens the file, creating it if missing, and brings its schema up to date.
    pub fn open(path: &Path) -> StoreResult<Self> {
        Ok(Self {
            db: Db::open(path, MIGRATIONS)?,
        })
    }
}

impl SqliteRelayStore {
    fn wake(
        &self,
        account: &PhoneNumber,
        devices: impl IntoIterator<Item = DeviceId>,
        reason: WakeReason,
    ) {
        for device in devices {
            self.db.announce(Wakeup {
                account: account.clone(),
                device,
                reason,
            });
        }
    }
}

#[async_trait]
impl RelayStore for SqliteRelayStore {
    fn wakeups(&self) -> broadcast::Receiver<Wakeup> {
        self.db.wakeups()
    }

    async fn put_verification(
        &self,
        phone: &PhoneNumber,
        code: &str,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> StoreResult<bool> {
        let (phone, code) = (phone.clone(), code.to_owned());
        self.db
            .write(move |tx| {
                let window: Option<(i64, u32)> = tx
                    .prepare_cached(
                        "SELECT window_start, issued FROM verifications WHERE phone = ?1",
                    )?
                    .query_row([phone.digits()], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?;
                match window {
                    Some((start, issued)) if now.0 < start + VERIFICATION_WINDOW_SECS => {
                        if issued >= MAX_CODES_PER_WINDOW {
                            return Ok(false);
                        }
                        // A new code, but the attempts made in this window still count.
                        tx.prepare_cached(
                            "UPDATE verifications SET code = ?2, expires_at = ?3, issued = issued + 1
                             WHERE phone = ?1",
                        )?
                        .execute(params![phone.digits(), code, expires_at.0])?;
                    }
                    _ => {
                        tx.prepare_cached(
                            "INSERT OR REPLACE INTO verifications
                                 (phone, code, expires_at, attempts, window_start, issued)
                             VALUES (?1, ?2, ?3, 0, ?4, 1)",
                        )?
                        .execute(params![phone.digits(), code, expires_at.0, now.0])?;
                    }
                }
                Ok(true)
            })
            .await
    }

    async fn check_verification(
        &self,
        phone: &PhoneNumber,
        code: &str,
        now: UnixTime,
    ) -> StoreResult<VerificationOutcome> {
        let (phone, code) = (phone.clone(), code.to_owned());
        self.db
            .write(move |tx| {
                let pending: Option<(String, i64, u32, i64)> = tx
                    .prepare_cached(
                        "SELECT code, expires_at, attempts, window_start FROM verifications WHERE phone = ?1",
                    )?
                    .query_row(
                        [phone.digits()],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                    )
                    .optional()?;
                let Some((stored, expires_at, attempts, start)) = pending else {
                    return Ok(VerificationOutcome::NoneRequested);
                };
                let in_window = now.0 < start + VERIFICATION_WINDOW_SECS;
                if in_window && attempts >= MAX_CODE_ATTEMPTS {
                    return Ok(VerificationOutcome::TooManyAttempts);
                }
                if stored.is_empty() {
                    return Ok(VerificationOutcome::NoneRequested);
                }
                let burn = |tx: &Connection| {
                    tx.prepare_cached("UPDATE verifications SET code = '' WHERE phone = ?1")?
                        .execute([phone.digits()])
                };
                if now.0 >= expires_at {
                    burn(tx)?;
                    return Ok(VerificationOutcome::Expired);
                }
                if stored == code {
                    tx.prepare_cached("DELETE FROM verifications WHERE phone = ?1")?
                        .execute([phone.digits()])?;
                    return Ok(VerificationOutcome::Verified);
                }
                tx.prepare_cached(
                    "UPDATE verifications SET attempts = attempts + 1 WHERE phone = ?1",
                )?
                .execute([phone.digits()])?;
                if attempts + 1 >= MAX_CODE_ATTEMPTS {
                    burn(tx)?;
                    return Ok(VerificationOutcome::TooManyAttempts);
                }
                Ok(VerificationOutcome::WrongCode)
            })
            .await
    }

    async fn peek_verification(
        &self,
        phone: &PhoneNumber,
        now: UnixTime,
    ) -> StoreResult<Option<String>> {
        let phone = phone.clone();
        self.db
            .read(move |tx| {
                Ok(tx
                    .prepare_cached(
                        "SELECT code FROM verifications WHERE phone = ?1 AND expires_at > ?2 AND code <> ''",
                    )?
                    .query_row(params![phone.digits(), now.0], |row| row.get(0))
                    .optional()?)
            })
            .await
    }

    async fn ensure_business(&self, waba: &WabaId, sandbox: bool) -> StoreResult<BusinessClock> {
        let waba = waba.clone();
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO businesses (waba_id, sandbox) VALUES (?1, ?2) ON CONFLICT (waba_id) DO NOTHING",
                )?
                .execute(params![waba.as_str(), sandbox])?;
                business_clock(tx, &waba)?
                    .ok_or_else(|| backend("the business row just ensured is missing"))
            })
            .await
    }

    async fn business_clock(&self, waba: &WabaId) -> StoreResult<Option<BusinessClock>> {
        let waba = waba.clone();
        self.db.read(move |tx| business_clock(tx, &waba)).await
    }

    async fn set_business_clock(&self, waba: &WabaId, clock: BusinessClock) -> StoreResult<()> {
        let waba = waba.clone();
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO businesses (waba_id, sandbox, offset_secs) VALUES (?1, ?2, ?3)
                     ON CONFLICT (waba_id) DO UPDATE
                     SET sandbox = excluded.sandbox, offset_secs = excluded.offset_secs",
                )?
                .execute(params![
                    waba.as_str(),
                    clock.sandbox,
                    clock.offset_secs
                ])?;
                Ok(())
            })
            .await
    }

    async fn account(&self, address: &PhoneNumber) -> StoreResult<Option<AccountRecord>> {
        let address = address.clone();
        self.db.read(move |tx| account(tx, &address)).await
    }

    async fn add_device(&self, device: NewDevice) -> StoreResult<DeviceId> {
        self.db
            .write(move |tx| {
                let new = &device.account;
                match account(tx, &new.address)? {
                    Some(known) if known.kind != new.kind || known.waba_id != new.waba_id => {
                        return Err(conflict(crate::ConflictKind::Exists, format!(
                            "account {} exists as another kind of account or for another business",
                            new.address
                        )));
                    }
                    Some(_) => {}
                    None => {
                        tx.prepare_cached(
                            "INSERT INTO accounts (address, kind, waba_id, verified_name, created_at)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(params![
                            new.address.digits(),
                            new.kind.as_str(),
                            new.waba_id.as_ref().map(WabaId::as_str),
                            new.verified_name,
                            new.created_at.0,
                        ])?;
                    }
                }
                let id: u32 = tx
                    .prepare_cached(
                        "UPDATE accounts SET next_device_id = next_device_id + 1 WHERE address = ?1
                         RETURNING next_device_id - 1",
                    )?
                    .query_row([new.address.digits()], |row| row.get(0))?;
                let id = DeviceId(id);
                tx.prepare_cached(
                    "INSERT INTO devices (account, device_id, token_hash, curve25519, ed25519)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(
                    params![new.address.digits(), id.0, device.token_hash, device.curve25519, device.ed25519],
                )?;
                add_one_time_keys(tx, &new.address, id, &device.one_time_keys)?;
                if let Some(key) = &device.fallback_key {
                    replace_fallback_key(tx, &new.address, id, key)?;
                }
                Ok(id)
            })
            .await
    }

    async fn device_by_token(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<(AccountRecord, DeviceId)>> {
        let token_hash = token_hash.to_owned();
        self.db
            .read(move |tx| {
                Ok(tx
                    .prepare_cached(
                        "SELECT a.address, a.kind, a.waba_id, a.verified_name, a.created_at, d.device_id
                         FROM devices d JOIN accounts a ON a.address = d.account
                         WHERE d.token_hash = ?1",
                    )?
                    .query_row(
                        [token_hash],
                        |row| Ok((account_from_row(row)?, DeviceId(row.get(5)?))),
                    )
                    .optional()?)
            })
            .await
    }

    async fn devices(&self, account: &PhoneNumber) -> StoreResult<Vec<DeviceRecord>> {
        let account = account.clone();
        self.db.read(move |tx| devices(tx, &account)).await
    }

    async fn upload_keys(
        &self,
        account: &PhoneNumber,
        device: DeviceId,
        one_time_keys: &[SignedKey],
        fallback_key: Option<&SignedKey>,
    ) -> StoreResult<u64> {
        let account = account.clone();
        let one_time_keys = one_time_keys.to_vec();
        let fallback_key = fallback_key.cloned();
        self.db
            .write(move |tx| {
                add_one_time_keys(tx, &account, device, &one_time_keys)?;
                if let Some(key) = &fallback_key {
                    replace_fallback_key(tx, &account, device, key)?;
                }
                unclaimed_count(tx, &account, device)
            })
            .await
    }

    async fn one_time_key_count(
        &self,
        account: &PhoneNumber,
        device: DeviceId,
    ) -> StoreResult<u64> {
        let account = account.clone();
        self.db
            .read(move |tx| unclaimed_count(tx, &account, device))
            .await
    }

    async fn claim_pre_keys(
        &self,
        account: &PhoneNumber,
        only: Option<&[DeviceId]>,
    ) -> StoreResult<Vec<ClaimedPreKey>> {
        let account = account.clone();
        let woken = account.clone();
        let only = only.map(<[DeviceId]>::to_vec);
        let claimed = self
            .db
            .write(move |tx| {
                let mut claimed = Vec::new();
                for device in devices(tx, &account)? {
                    if only
                        .as_ref()
                        .is_some_and(|only| !only.contains(&device.device_id))
                    {
                        continue;
                    }
                    let one_time = tx
                        .prepare_cached(
                            "UPDATE one_time_keys SET claimed = 1
                             WHERE seq = (SELECT seq FROM one_time_keys
                                          WHERE account = ?1 AND device_id = ?2 AND claimed = 0
                                          ORDER BY seq LIMIT 1)
                             RETURNING key_id, key, signature",
                        )?
                        .query_row(params![account.digits(), device.device_id.0], signed_key)
                        .optional()?;
                    if let Some(key) = one_time {
                        claimed.push(ClaimedPreKey {
                            device,
                            key,
                            fallback: false,
                        });
                        continue;
                    }
                    let fallback = tx
                        .prepare_cached(
                            "UPDATE fallback_keys SET used = 1 WHERE account = ?1 AND device_id = ?2
                             RETURNING key_id, key, signature",
                        )?
                        .query_row(params![account.digits(), device.device_id.0], signed_key)
                        .optional()?;
                    if let Some(key) = fallback {
                        claimed.push(ClaimedPreKey {
                            device,
                            key,
                            fallback: true,
                        });
                    }
                }
                Ok(claimed)
            })
            .await?;
        self.wake(
            &woken,
            claimed.iter().map(|c| c.device.device_id),
            WakeReason::KeysClaimed,
        );
        Ok(claimed)
    }

    async fn accept(&self, submission: NewSubmission) -> StoreResult<Result<Accepted, Refusal>> {
        self.db
            .unit(async move |tx| envelopes::accept(tx, &submission).await)
            .await
    }

    async fn submitted(&self, sender: &PhoneNumber, id: &MessageId) -> StoreResult<bool> {
        let (sender, id) = (sender.clone(), id.clone());
        self.db
            .read_unit(async move |tx| envelopes::submitted(tx, &sender, &id).await)
            .await
    }

    async fn pending(
        &self,
        account: &PhoneNumber,
        device: DeviceId,
        after_seq: u64,
        limit: u32,
    ) -> StoreResult<Vec<StoredEnvelope>> {
        let account = account.clone();
        self.db
            .read_unit(async move |tx| {
                envelopes::pending(tx, &account, device, after_seq, limit).await
            })
            .await
    }

    async fn ack(&self, account: &PhoneNumber, device: DeviceId, seqs: &[u64]) -> StoreResult<u64> {
        let account = account.clone();
        let seqs = seqs.to_vec();
        self.db
            .unit(async move |tx| envelopes::ack(tx, &account, device, &seqs).await)
            .await
    }

    async fn relationship(
        &self,
        business: &PhoneNumber,
        user: &PhoneNumber,
    ) -> StoreResult<Option<ventana_core::Relationship>> {
        let (business, user) = (business.clone(), user.clone());
        self.db
            .read_unit(async move |tx| envelopes::relationship_between(tx, &business, &user).await)
            .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.db
            .read(|tx| Ok(tx.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?))
            .await
    }

    async fn set_blocked(
        &self,
        user: &PhoneNumber,
        business: &PhoneNumber,
        blocked: bool,
        at: UnixTime,
    ) -> StoreResult<()> {
        let (user, business) = (user.clone(), business.clone());
        self.db
            .unit(async move |tx| envelopes::set_blocked(tx, &user, &business, blocked, at).await)
            .await
    }
}

fn business_clock(tx: &Connection, waba: &WabaId) -> TxResult<Option<BusinessClock>> {
    Ok(tx
        .prepare_cached("SELECT sandbox, offset_secs FROM businesses WHERE waba_id = ?1")?
        .query_row([waba.as_str()], |row| {
            Ok(BusinessClock {
                sandbox: row.get(0)?,
                offset_secs: row.get(1)?,
            })
        })
        .optional()?)
}

fn account(tx: &Connection, address: &PhoneNumber) -> TxResult<Option<AccountRecord>> {
    Ok(tx
        .prepare_cached(
            "SELECT address, kind, waba_id, verified_name, created_at FROM accounts WHERE address = ?1",
        )?
        .query_row([address.digits()], account_from_row)
        .optional()?)
}

/// Reads the five account columns, in `account`'s order, from the start of a row.
fn account_from_row(row: &Row<'_>) -> rusqlite::Result<AccountRecord> {
    Ok(AccountRecord {
        address: parsed(row, 0)?,
        kind: named(row, 1, AccountKind::parse)?,
        waba_id: parsed_opt(row, 2)?,
        verified_name: row.get(3)?,
        created_at: UnixTime(row.get(4)?),
    })
}

/// The account's devices in device-id order.
fn devices(tx: &Connection, account: &PhoneNumber) -> TxResult<Vec<DeviceRecord>> {
    let mut stmt = tx.prepare_cached(
        "SELECT account, device_id, curve25519, ed25519 FROM devices WHERE account = ?1 ORDER BY device_id",
    )?;
    let rows = stmt.query_map([account.digits()], |row| {
        Ok(DeviceRecord {
            account: parsed(row, 0)?,
            device_id: DeviceId(row.get(1)?),
            curve25519: row.get(2)?,
            ed25519: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn signed_key(row: &Row<'_>) -> rusqlite::Result<SignedKey> {
    Ok(SignedKey {
        key_id: row.get(0)?,
        key: row.get(1)?,
        signature: row.get(2)?,
    })
}

/// Adds keys in upload order. A key id seen before (claimed or not) is skipped if it carries
/// the same key, and is a conflict otherwise, which rolls back the whole upload.
fn add_one_time_keys(
    tx: &Connection,
    account: &PhoneNumber,
    device: DeviceId,
    keys: &[SignedKey],
) -> TxResult<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO one_time_keys (account, device_id, key_id, key, signature) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (account, device_id, key_id) DO NOTHING",
    )?;
    let mut known = tx.prepare_cached(
        "SELECT key, signature FROM one_time_keys WHERE account = ?1 AND device_id = ?2 AND key_id = ?3",
    )?;
    for key in keys {
        let added = insert.execute(params![
            account.digits(),
            device.0,
            key.key_id,
            key.key,
            key.signature
        ])?;
        if added == 0 {
            let (stored_key, stored_signature): (String, String) = known
                .query_row(params![account.digits(), device.0, key.key_id], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?;
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

fn replace_fallback_key(
    tx: &Connection,
    account: &PhoneNumber,
    device: DeviceId,
    key: &SignedKey,
) -> TxResult<()> {
    tx.prepare_cached(
        "INSERT INTO fallback_keys (account, device_id, key_id, key, signature, used) VALUES (?1, ?2, ?3, ?4, ?5, 0)
         ON CONFLICT (account, device_id) DO UPDATE
         SET key_id = excluded.key_id, key = excluded.key, signature = excluded.signature, used = 0",
    )?
    .execute(params![account.digits(), device.0, key.key_id, key.key, key.signature])?;
    Ok(())
}

fn unclaimed_count(tx: &Connection, account: &PhoneNumber, device: DeviceId) -> TxResult<u64> {
    Ok(tx
        .prepare_cached(
            "SELECT count(*) FROM one_time_keys WHERE account = ?1 AND device_id = ?2 AND claimed = 0",
        )?
        .query_row(params![account.digits(), device.0], |row| row.get(0))?)
}
