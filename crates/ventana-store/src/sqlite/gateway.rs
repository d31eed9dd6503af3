//! [`GatewayStore`] on SQLite: the business side's tables, in the endpoint's own file so a
//! webhook job commits in the same transaction as the message it reports.

use super::db::{TxResult, conflict, named, parsed};
use super::endpoint::SqliteEndpointStore;
use crate::StoreResult;
use crate::endpoint::{
    AccessTokenRecord, BusinessRecord, GatewayStore, PhoneNumberRecord, WebhookJob,
};
use crate::idempotency::{
    ClaimOutcome, IdempotencyRecord, IdempotencyState, NewClaim, StoredResponse,
};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::broadcast;
use ventana_core::{IdempotencyKey, PhoneNumber, PhoneNumberId, UnixTime, WabaId};

const BUSINESS_COLUMNS: &str =
    "waba_id, name, app_secret_sealed, webhook_url, verify_token_sealed, sandbox, created_at";
const NUMBER_COLUMNS: &str =
    "id, waba_id, address, display_phone_number, verified_name, created_at";
const TOKEN_COLUMNS: &str = "id, waba_id, token_hash, label, created_at, revoked_at";
const KEY_COLUMNS: &str = "phone_number_id, key, fingerprint, message_id, state, attempt, \
     claimed_until, response_status, response_body, created_at";

#[async_trait]
impl GatewayStore for SqliteEndpointStore {
    async fn create_business(&self, b: BusinessRecord) -> StoreResult<()> {
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    &format!("INSERT INTO businesses ({BUSINESS_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                )?
                .execute(params![
                    b.waba_id.as_str(),
                    b.name,
                    b.app_secret_sealed,
                    b.webhook_url,
                    b.verify_token_sealed,
                    b.sandbox,
                    b.created_at.0,
                ])?;
                Ok(())
            })
            .await
    }

    async fn business(&self, waba: &WabaId) -> StoreResult<Option<BusinessRecord>> {
        let waba = waba.clone();
        self.db
            .read(move |tx| {
                Ok(tx
                    .prepare_cached(&format!(
                        "SELECT {BUSINESS_COLUMNS} FROM businesses WHERE waba_id = ?1"
                    ))?
                    .query_row([waba.as_str()], business_from_row)
                    .optional()?)
            })
            .await
    }

    async fn businesses(&self) -> StoreResult<Vec<BusinessRecord>> {
        self.db
            .read_blocking(move |tx| {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {BUSINESS_COLUMNS} FROM businesses ORDER BY created_at, waba_id"
                ))?;
                Ok(stmt
                    .query_map([], business_from_row)?
                    .collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    async fn add_phone_number(&self, n: PhoneNumberRecord) -> StoreResult<()> {
        self.db
            .write(move |tx| {
                tx.prepare_cached(&format!(
                    "INSERT INTO phone_numbers ({NUMBER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                ))?
                .execute(params![
                    n.id.as_str(),
                    n.waba_id.as_str(),
                    n.address.digits(),
                    n.display_phone_number,
                    n.verified_name,
                    n.created_at.0,
                ])?;
                Ok(())
            })
            .await
    }

    async fn phone_number(&self, id: &PhoneNumberId) -> StoreResult<Option<PhoneNumberRecord>> {
        let id = id.clone();
        self.db
            .read(move |tx| {
                Ok(tx
                    .prepare_cached(&format!(
                        "SELECT {NUMBER_COLUMNS} FROM phone_numbers WHERE id = ?1"
                    ))?
                    .query_row([id.as_str()], number_from_row)
                    .optional()?)
            })
            .await
    }

    async fn phone_number_by_address(
        &self,
        address: &PhoneNumber,
    ) -> StoreResult<Option<PhoneNumberRecord>> {
        let address = address.clone();
        self.db
            .read(move |tx| {
                Ok(tx
                    .prepare_cached(&format!(
                        "SELECT {NUMBER_COLUMNS} FROM phone_numbers WHERE address = ?1"
                    ))?
                    .query_row([address.digits()], number_from_row)
                    .optional()?)
            })
            .await
    }

    async fn phone_numbers(&self) -> StoreResult<Vec<PhoneNumberRecord>> {
        self.db
            .read_blocking(move |tx| {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {NUMBER_COLUMNS} FROM phone_numbers ORDER BY created_at, id"
                ))?;
                Ok(stmt
                    .query_map([], number_from_row)?
                    .collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    fn number_changes(&self) -> Option<broadcast::Receiver<()>> {
        // One process owns the file: every number is added through this very node.
        None
    }

    async fn add_token(&self, t: AccessTokenRecord) -> StoreResult<()> {
        self.db
            .write(move |tx| {
                tx.prepare_cached(&format!(
                    "INSERT INTO access_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                ))?
                .execute(params![
                    t.id,
                    t.waba_id.as_str(),
                    t.token_hash,
                    t.label,
                    t.created_at.0,
                    t.revoked_at.map(|at| at.0),
                ])?;
                Ok(())
            })
            .await
    }

    async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<AccessTokenRecord>> {
        let token_hash = token_hash.to_owned();
        self.db
            .read(move |tx| {
                Ok(tx
                    .prepare_cached(&format!(
                        "SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE token_hash = ?1"
                    ))?
                    .query_row([token_hash], token_from_row)
                    .optional()?)
            })
            .await
    }

    async fn tokens(&self, waba: &WabaId) -> StoreResult<Vec<AccessTokenRecord>> {
        let waba = waba.clone();
        self.db
            .read_blocking(move |tx| {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE waba_id = ?1 ORDER BY created_at, id"
                ))?;
                Ok(stmt.query_map([waba.as_str()], token_from_row)?.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    async fn revoke_token(&self, waba: &WabaId, id: &str, at: UnixTime) -> StoreResult<bool> {
        let (waba, id) = (waba.clone(), id.to_owned());
        self.db
            .write(move |tx| {
                // Revoking keeps the first revocation time: a token is revoked once.
                let revoked = tx
                    .prepare_cached(
                        "UPDATE access_tokens SET revoked_at = ?3
                         WHERE waba_id = ?1 AND id = ?2 AND revoked_at IS NULL",
                    )?
                    .execute(params![waba.as_str(), id, at.0])?;
                Ok(revoked == 1)
            })
            .await
    }

    async fn lease_webhooks(
        &self,
        node: &str,
        now: UnixTime,
        lease_secs: i64,
        limit: u32,
    ) -> StoreResult<Vec<WebhookJob>> {
        let node = node.to_owned();
        self.db
            .write(move |tx| {
                // Oldest event first, so a business sees its events in the order they happened
                // as far as retries allow.
                let mut stmt = tx.prepare_cached(
                    "UPDATE webhooks SET leased_by = ?3, lease_until = ?4
                     WHERE id IN (SELECT id FROM webhooks
                                  WHERE next_attempt_at <= ?1
                                    AND (lease_until IS NULL OR lease_until <= ?1)
                                  ORDER BY created_at, rowid
                                  LIMIT ?2)
                     RETURNING id, waba_id, body_sealed, attempts, next_attempt_at, created_at",
                )?;
                let rows =
                    stmt.query_map(params![now.0, limit, node, now.0 + lease_secs], |row| {
                        Ok(WebhookJob {
                            id: row.get(0)?,
                            waba_id: parsed(row, 1)?,
                            body_sealed: row.get(2)?,
                            attempts: row.get(3)?,
                            next_attempt_at: UnixTime(row.get(4)?),
                            created_at: UnixTime(row.get(5)?),
                        })
                    })?;
                let mut jobs = rows.collect::<Result<Vec<_>, _>>()?;
                // RETURNING does not keep the subquery's order.
                jobs.sort_by_key(|j| j.created_at);
                Ok(jobs)
            })
            .await
    }

    async fn webhook_delivered(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.db
            .write(move |tx| {
                tx.prepare_cached("DELETE FROM webhooks WHERE id = ?1")?
                    .execute([id])?;
                Ok(())
            })
            .await
    }

    async fn webhook_retry(
        &self,
        id: &str,
        attempts: u32,
        next_attempt_at: UnixTime,
        last_error: &str,
    ) -> StoreResult<()> {
        let (id, last_error) = (id.to_owned(), last_error.to_owned());
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    "UPDATE webhooks SET attempts = ?2, next_attempt_at = ?3, last_error = ?4,
                         leased_by = NULL, lease_until = NULL
                     WHERE id = ?1",
                )?
                .execute(params![id, attempts, next_attempt_at.0, last_error])?;
                Ok(())
            })
            .await
    }

    async fn next_webhook_due(&self) -> StoreResult<Option<UnixTime>> {
        self.db
            .read(move |tx| {
                let due: Option<i64> = tx
                    .prepare_cached("SELECT min(next_attempt_at) FROM webhooks")?
                    .query_row([], |row| row.get(0))?;
                Ok(due.map(UnixTime))
            })
            .await
    }

    async fn acquire_endpoint(
        &self,
        owner: &PhoneNumber,
        node: &str,
        now: UnixTime,
        ttl_secs: i64,
    ) -> StoreResult<bool> {
        let (owner, node) = (owner.clone(), node.to_owned());
        self.db
            .write(move |tx| {
                let holder: String = tx
                    .prepare_cached(
                        "INSERT INTO endpoint_leases (owner, node, expires_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT (owner) DO UPDATE SET node = excluded.node, expires_at = excluded.expires_at
                             WHERE endpoint_leases.node = excluded.node OR endpoint_leases.expires_at <= ?4
                         RETURNING node",
                    )?
                    .query_row(
                        params![owner.digits(), node, now.0 + ttl_secs, now.0],
                        |row| row.get(0),
                    )
                    .optional()?
                    .unwrap_or_default();
                Ok(holder == node)
            })
            .await
    }

    async fn release_endpoint(&self, owner: &PhoneNumber, node: &str) -> StoreResult<()> {
        let (owner, node) = (owner.clone(), node.to_owned());
        self.db
            .write(move |tx| {
                tx.prepare_cached("DELETE FROM endpoint_leases WHERE owner = ?1 AND node = ?2")?
                    .execute(params![owner.digits(), node])?;
                Ok(())
            })
            .await
    }

    async fn claim_idempotency_key(
        &self,
        c: NewClaim,
        expired_before: UnixTime,
    ) -> StoreResult<ClaimOutcome> {
        self.db
            .write(move |tx| {
                // A row past retention is replaced as if it were not there.
                let claimed = tx
                    .prepare_cached(&format!(
                        "INSERT INTO idempotency_keys ({KEY_COLUMNS})
                         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, NULL, NULL, ?7)
                         ON CONFLICT (phone_number_id, key) DO UPDATE SET
                             fingerprint = excluded.fingerprint, message_id = excluded.message_id,
                             state = excluded.state, attempt = excluded.attempt,
                             claimed_until = excluded.claimed_until, response_status = NULL,
                             response_body = NULL, created_at = excluded.created_at
                         WHERE idempotency_keys.created_at <= ?8
                         RETURNING {KEY_COLUMNS}"
                    ))?
                    .query_row(
                        params![
                            c.phone_number_id.as_str(),
                            c.key.as_str(),
                            c.fingerprint,
                            c.message_id.as_str(),
                            IdempotencyState::InProgress.as_str(),
                            c.claimed_until.0,
                            c.created_at.0,
                            expired_before.0,
                        ],
                        key_from_row,
                    )
                    .optional()?;
                if let Some(record) = claimed {
                    return Ok(ClaimOutcome::Claimed(record));
                }
                select_key(tx, &c.phone_number_id, &c.key)?
                    .map(ClaimOutcome::Existing)
                    .ok_or_else(|| {
                        conflict(
                            crate::ConflictKind::Changed,
                            "the idempotency key vanished while claimed; retry",
                        )
                    })
            })
            .await
    }

    async fn idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let (id, key) = (phone_number_id.clone(), key.clone());
        self.db.read(move |tx| select_key(tx, &id, &key)).await
    }

    async fn take_over_idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
        attempt: i64,
        now: UnixTime,
        claimed_until: UnixTime,
    ) -> StoreResult<bool> {
        let (id, key) = (phone_number_id.clone(), key.clone());
        self.db
            .write(move |tx| {
                let taken = tx
                    .prepare_cached(
                        "UPDATE idempotency_keys SET attempt = attempt + 1, claimed_until = ?5
                         WHERE phone_number_id = ?1 AND key = ?2 AND attempt = ?3
                           AND state = ?6 AND claimed_until <= ?4",
                    )?
                    .execute(params![
                        id.as_str(),
                        key.as_str(),
                        attempt,
                        now.0,
                        claimed_until.0,
                        IdempotencyState::InProgress.as_str(),
                    ])?;
                Ok(taken == 1)
            })
            .await
    }

    async fn complete_idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
        attempt: i64,
        response: StoredResponse,
    ) -> StoreResult<bool> {
        let (id, key) = (phone_number_id.clone(), key.clone());
        self.db
            .write(move |tx| {
                let completed = tx
                    .prepare_cached(
                        "UPDATE idempotency_keys
                         SET state = ?6, response_status = ?4, response_body = ?5
                         WHERE phone_number_id = ?1 AND key = ?2 AND attempt = ?3 AND state = ?7",
                    )?
                    .execute(params![
                        id.as_str(),
                        key.as_str(),
                        attempt,
                        response.status,
                        response.body,
                        IdempotencyState::Completed.as_str(),
                        IdempotencyState::InProgress.as_str(),
                    ])?;
                Ok(completed == 1)
            })
            .await
    }

    async fn release_idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
        attempt: i64,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let (id, key) = (phone_number_id.clone(), key.clone());
        self.db
            .write(move |tx| {
                let released = tx
                    .prepare_cached(
                        "UPDATE idempotency_keys SET claimed_until = min(claimed_until, ?4)
                         WHERE phone_number_id = ?1 AND key = ?2 AND attempt = ?3 AND state = ?5",
                    )?
                    .execute(params![
                        id.as_str(),
                        key.as_str(),
                        attempt,
                        now.0,
                        IdempotencyState::InProgress.as_str(),
                    ])?;
                Ok(released == 1)
            })
            .await
    }

    async fn prune_idempotency_keys(&self, created_before: UnixTime) -> StoreResult<u64> {
        self.db
            .write(move |tx| {
                let pruned = tx
                    .prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?
                    .execute([created_before.0])?;
                Ok(pruned as u64)
            })
            .await
    }
}

/// Queues a webhook job, in the caller's transaction. A job already queued under its id is
/// left as it is: the same event reported again (a record applied twice) is delivered once.
pub(super) fn queue_webhook(tx: &Connection, job: &WebhookJob) -> TxResult<()> {
    tx.prepare_cached(
        "INSERT INTO webhooks (id, waba_id, body_sealed, attempts, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT DO NOTHING",
    )?
    .execute(params![
        job.id,
        job.waba_id.as_str(),
        job.body_sealed,
        job.attempts,
        job.next_attempt_at.0,
        job.created_at.0,
    ])?;
    Ok(())
}

fn select_key(
    tx: &Connection,
    id: &PhoneNumberId,
    key: &IdempotencyKey,
) -> TxResult<Option<IdempotencyRecord>> {
    Ok(tx
        .prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM idempotency_keys WHERE phone_number_id = ?1 AND key = ?2"
        ))?
        .query_row([id.as_str(), key.as_str()], key_from_row)
        .optional()?)
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<IdempotencyRecord> {
    let status: Option<u16> = row.get(7)?;
    let body: Option<String> = row.get(8)?;
    Ok(IdempotencyRecord {
        phone_number_id: parsed(row, 0)?,
        key: parsed(row, 1)?,
        fingerprint: row.get(2)?,
        message_id: parsed(row, 3)?,
        state: named(row, 4, IdempotencyState::parse)?,
        attempt: row.get(5)?,
        claimed_until: UnixTime(row.get(6)?),
        response: status
            .zip(body)
            .map(|(status, body)| StoredResponse { status, body }),
        created_at: UnixTime(row.get(9)?),
    })
}

fn business_from_row(row: &Row<'_>) -> rusqlite::Result<BusinessRecord> {
    Ok(BusinessRecord {
        waba_id: parsed(row, 0)?,
        name: row.get(1)?,
        app_secret_sealed: row.get(2)?,
        webhook_url: row.get(3)?,
        verify_token_sealed: row.get(4)?,
        sandbox: row.get(5)?,
        created_at: UnixTime(row.get(6)?),
    })
}

fn number_from_row(row: &Row<'_>) -> rusqlite::Result<PhoneNumberRecord> {
    Ok(PhoneNumberRecord {
        id: parsed(row, 0)?,
        waba_id: parsed(row, 1)?,
        address: parsed(row, 2)?,
        display_phone_number: row.get(3)?,
        verified_name: row.get(4)?,
        created_at: UnixTime(row.get(5)?),
    })
}

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<AccessTokenRecord> {
    Ok(AccessTokenRecord {
        id: row.get(0)?,
        waba_id: parsed(row, 1)?,
        token_hash: row.get(2)?,
        label: row.get(3)?,
        created_at: UnixTime(row.get(4)?),
        revoked_at: row.get::<_, Option<i64>>(5)?.map(UnixTime),
    })
}
