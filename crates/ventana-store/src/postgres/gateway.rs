//! [`GatewayStore`] on PostgreSQL: the business side's tables, in the endpoint's own schema so
//! a webhook job commits in the same transaction as the message it reports.

use super::db::{
    TxResult, conflict, execute, get, named, parsed, query, query_one, query_opt, time,
    transaction, unsigned,
};
use super::endpoint::PgEndpointStore;
use super::wakeups::notify_numbers;
use crate::StoreResult;
use crate::endpoint::{
    AccessTokenRecord, BusinessRecord, GatewayStore, PhoneNumberRecord, WebhookJob,
};
use crate::idempotency::{
    ClaimOutcome, IdempotencyRecord, IdempotencyState, NewClaim, StoredResponse,
};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio::sync::broadcast;
use tokio_postgres::Row;
use ventana_core::{IdempotencyKey, PhoneNumber, PhoneNumberId, UnixTime, WabaId};

const BUSINESS_COLUMNS: &str =
    "waba_id, name, app_secret_sealed, webhook_url, verify_token_sealed, sandbox, created_at";
const NUMBER_COLUMNS: &str =
    "id, waba_id, address, display_phone_number, verified_name, created_at";
const TOKEN_COLUMNS: &str = "id, waba_id, token_hash, label, created_at, revoked_at";
const KEY_COLUMNS: &str = "phone_number_id, key, fingerprint, message_id, state, attempt, \
     claimed_until, response_status, response_body, created_at";

#[async_trait]
impl GatewayStore for PgEndpointStore {
    async fn create_business(&self, b: BusinessRecord) -> StoreResult<()> {
        transaction!(self.db, |tx| {
            let sql = format!(
                "INSERT INTO businesses ({BUSINESS_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            );
            execute(
                tx,
                &sql,
                &[
                    &b.waba_id.as_str(),
                    &b.name,
                    &b.app_secret_sealed,
                    &b.webhook_url,
                    &b.verify_token_sealed,
                    &b.sandbox,
                    &b.created_at.0,
                ],
            )
            .await?;
            Ok(())
        })
    }

    async fn business(&self, waba: &WabaId) -> StoreResult<Option<BusinessRecord>> {
        self.db
            .read(async |c| {
                let sql = format!("SELECT {BUSINESS_COLUMNS} FROM businesses WHERE waba_id = $1");
                let row = query_opt(c, &sql, &[&waba.as_str()]).await?;
                row.as_ref().map(business_from_row).transpose()
            })
            .await
    }

    async fn businesses(&self) -> StoreResult<Vec<BusinessRecord>> {
        self.db
            .read(async |c| {
                let sql = format!(
                    "SELECT {BUSINESS_COLUMNS} FROM businesses ORDER BY created_at, waba_id"
                );
                let rows = query(c, &sql, &[]).await?;
                rows.iter().map(business_from_row).collect()
            })
            .await
    }

    async fn add_phone_number(&self, n: PhoneNumberRecord) -> StoreResult<()> {
        transaction!(self.db, |tx| {
            let sql = format!(
                "INSERT INTO phone_numbers ({NUMBER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
            );
            execute(
                tx,
                &sql,
                &[
                    &n.id.as_str(),
                    &n.waba_id.as_str(),
                    &n.address.digits(),
                    &n.display_phone_number,
                    &n.verified_name,
                    &n.created_at.0,
                ],
            )
            .await?;
            // Every node hears of it once this commits, and hosts it at once.
            notify_numbers(tx, &self.numbers_channel).await?;
            Ok(())
        })
    }

    async fn phone_number(&self, id: &PhoneNumberId) -> StoreResult<Option<PhoneNumberRecord>> {
        self.db
            .read(async |c| {
                let sql = format!("SELECT {NUMBER_COLUMNS} FROM phone_numbers WHERE id = $1");
                let row = query_opt(c, &sql, &[&id.as_str()]).await?;
                row.as_ref().map(number_from_row).transpose()
            })
            .await
    }

    async fn phone_number_by_address(
        &self,
        address: &PhoneNumber,
    ) -> StoreResult<Option<PhoneNumberRecord>> {
        self.db
            .read(async |c| {
                let sql = format!("SELECT {NUMBER_COLUMNS} FROM phone_numbers WHERE address = $1");
                let row = query_opt(c, &sql, &[&address.digits()]).await?;
                row.as_ref().map(number_from_row).transpose()
            })
            .await
    }

    async fn phone_numbers(&self) -> StoreResult<Vec<PhoneNumberRecord>> {
        self.db
            .read(async |c| {
                let sql =
                    format!("SELECT {NUMBER_COLUMNS} FROM phone_numbers ORDER BY created_at, id");
                let rows = query(c, &sql, &[]).await?;
                rows.iter().map(number_from_row).collect()
            })
            .await
    }

    fn number_changes(&self) -> Option<broadcast::Receiver<()>> {
        Some(self.numbers.subscribe())
    }

    async fn add_token(&self, t: AccessTokenRecord) -> StoreResult<()> {
        transaction!(self.db, |tx| {
            let sql = format!(
                "INSERT INTO access_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
            );
            execute(
                tx,
                &sql,
                &[
                    &t.id,
                    &t.waba_id.as_str(),
                    &t.token_hash,
                    &t.label,
                    &t.created_at.0,
                    &t.revoked_at.map(|at| at.0),
                ],
            )
            .await?;
            Ok(())
        })
    }

    async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<AccessTokenRecord>> {
        self.db
            .read(async |c| {
                let sql =
                    format!("SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE token_hash = $1");
                let row = query_opt(c, &sql, &[&token_hash]).await?;
                row.as_ref().map(token_from_row).transpose()
            })
            .await
    }

    async fn tokens(&self, waba: &WabaId) -> StoreResult<Vec<AccessTokenRecord>> {
        self.db
            .read(async |c| {
                let sql = format!(
                    "SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE waba_id = $1
                     ORDER BY created_at, id"
                );
                let rows = query(c, &sql, &[&waba.as_str()]).await?;
                rows.iter().map(token_from_row).collect()
            })
            .await
    }

    async fn revoke_token(&self, waba: &WabaId, id: &str, at: UnixTime) -> StoreResult<bool> {
        transaction!(self.db, |tx| {
            // Revoking keeps the first revocation time: a token is revoked once.
            let revoked = execute(
                tx,
                "UPDATE access_tokens SET revoked_at = $3
                     WHERE waba_id = $1 AND id = $2 AND revoked_at IS NULL",
                &[&waba.as_str(), &id, &at.0],
            )
            .await?;
            Ok(revoked == 1)
        })
    }

    async fn lease_webhooks(
        &self,
        node: &str,
        now: UnixTime,
        lease_secs: i64,
        limit: u32,
    ) -> StoreResult<Vec<WebhookJob>> {
        transaction!(self.db, |tx| {
            // Oldest event first, so a business sees its events in the order they happened
            // as far as retries allow. `SKIP LOCKED` passes over jobs another node is
            // leasing right now; one it has leased and committed fails the recheck of
            // `lease_until`, so no job goes to two nodes at once.
            let rows = query(
                tx,
                "UPDATE webhooks SET leased_by = $3, lease_until = $4
                     WHERE id IN (SELECT id FROM webhooks
                                  WHERE next_attempt_at <= $1
                                    AND (lease_until IS NULL OR lease_until <= $1)
                                  ORDER BY created_at, written
                                  LIMIT $2
                                  FOR UPDATE SKIP LOCKED)
                     RETURNING id, waba_id, body_sealed, attempts, next_attempt_at, created_at,
                               written",
                &[
                    &now.0,
                    &i64::from(limit),
                    &node,
                    &now.0.saturating_add(lease_secs),
                ],
            )
            .await?;
            let mut jobs = rows
                .iter()
                .map(|row| Ok((job_from_row(row)?, get::<i64>(row, 6)?)))
                .collect::<TxResult<Vec<_>>>()?;
            // RETURNING does not keep the subquery's order.
            jobs.sort_by_key(|(job, written)| (job.created_at, *written));
            Ok(jobs.into_iter().map(|(job, _)| job).collect())
        })
    }

    async fn webhook_delivered(&self, id: &str) -> StoreResult<()> {
        transaction!(self.db, |tx| {
            execute(tx, "DELETE FROM webhooks WHERE id = $1", &[&id]).await?;
            Ok(())
        })
    }

    async fn webhook_retry(
        &self,
        id: &str,
        attempts: u32,
        next_attempt_at: UnixTime,
        last_error: &str,
    ) -> StoreResult<()> {
        transaction!(self.db, |tx| {
            execute(
                tx,
                "UPDATE webhooks SET attempts = $2, next_attempt_at = $3, last_error = $4,
                         leased_by = NULL, lease_until = NULL
                     WHERE id = $1",
                &[&id, &i64::from(attempts), &next_attempt_at.0, &last_error],
            )
            .await?;
            Ok(())
        })
    }

    async fn next_webhook_due(&self) -> StoreResult<Option<UnixTime>> {
        self.db
            .read(async |c| {
                let row = query_one(c, "SELECT min(next_attempt_at) FROM webhooks", &[]).await?;
                let due: Option<i64> = get(&row, 0)?;
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
        transaction!(self.db, |tx| {
            // One statement: of two nodes racing for a free or expired lease, the second
            // waits for the first's row and then finds it held.
            let holder = query_opt(
                tx,
                "INSERT INTO endpoint_leases (owner, node, expires_at) VALUES ($1, $2, $3)
                     ON CONFLICT (owner) DO UPDATE
                     SET node = excluded.node, expires_at = excluded.expires_at
                     WHERE endpoint_leases.node = excluded.node
                        OR endpoint_leases.expires_at <= $4
                     RETURNING node",
                &[
                    &owner.digits(),
                    &node,
                    &now.0.saturating_add(ttl_secs),
                    &now.0,
                ],
            )
            .await?;
            let holder: Option<String> = holder.map(|row| get(&row, 0)).transpose()?;
            Ok(holder.as_deref() == Some(node))
        })
    }

    async fn release_endpoint(&self, owner: &PhoneNumber, node: &str) -> StoreResult<()> {
        transaction!(self.db, |tx| {
            execute(
                tx,
                "DELETE FROM endpoint_leases WHERE owner = $1 AND node = $2",
                &[&owner.digits(), &node],
            )
            .await?;
            Ok(())
        })
    }

    async fn claim_idempotency_key(
        &self,
        c: NewClaim,
        expired_before: UnixTime,
    ) -> StoreResult<ClaimOutcome> {
        transaction!(self.db, |tx| {
            // One statement: of concurrent claims of one key, the later ones wait for the
            // first's row and then find it in use (or, past retention, replace it).
            let sql = format!(
                "INSERT INTO idempotency_keys ({KEY_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, 1, $6, NULL, NULL, $7)
                 ON CONFLICT (phone_number_id, key) DO UPDATE SET
                     fingerprint = excluded.fingerprint, message_id = excluded.message_id,
                     state = excluded.state, attempt = excluded.attempt,
                     claimed_until = excluded.claimed_until, response_status = NULL,
                     response_body = NULL, created_at = excluded.created_at
                 WHERE idempotency_keys.created_at <= $8
                 RETURNING {KEY_COLUMNS}"
            );
            let claimed = query_opt(
                tx,
                &sql,
                &[
                    &c.phone_number_id.as_str(),
                    &c.key.as_str(),
                    &c.fingerprint,
                    &c.message_id.as_str(),
                    &IdempotencyState::InProgress.as_str(),
                    &c.claimed_until.0,
                    &c.created_at.0,
                    &expired_before.0,
                ],
            )
            .await?;
            if let Some(row) = claimed {
                return Ok(ClaimOutcome::Claimed(key_from_row(&row)?));
            }
            // A statement of its own sees the row the conflict was with, committed.
            select_key(tx, &c.phone_number_id, &c.key)
                .await?
                .map(ClaimOutcome::Existing)
                .ok_or_else(|| {
                    conflict(
                        crate::ConflictKind::Changed,
                        "the idempotency key vanished while claimed; retry",
                    )
                })
        })
    }

    async fn idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        self.db
            .read(async |c| select_key(c, phone_number_id, key).await)
            .await
    }

    async fn take_over_idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
        attempt: i64,
        now: UnixTime,
        claimed_until: UnixTime,
    ) -> StoreResult<bool> {
        transaction!(self.db, |tx| {
            let taken = execute(
                tx,
                "UPDATE idempotency_keys SET attempt = attempt + 1, claimed_until = $5
                 WHERE phone_number_id = $1 AND key = $2 AND attempt = $3
                   AND state = $6 AND claimed_until <= $4",
                &[
                    &phone_number_id.as_str(),
                    &key.as_str(),
                    &attempt,
                    &now.0,
                    &claimed_until.0,
                    &IdempotencyState::InProgress.as_str(),
                ],
            )
            .await?;
            Ok(taken == 1)
        })
    }

    async fn complete_idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
        attempt: i64,
        response: StoredResponse,
    ) -> StoreResult<bool> {
        transaction!(self.db, |tx| {
            let completed = execute(
                tx,
                "UPDATE idempotency_keys
                 SET state = $6, response_status = $4, response_body = $5
                 WHERE phone_number_id = $1 AND key = $2 AND attempt = $3 AND state = $7",
                &[
                    &phone_number_id.as_str(),
                    &key.as_str(),
                    &attempt,
                    &i64::from(response.status),
                    &response.body,
                    &IdempotencyState::Completed.as_str(),
                    &IdempotencyState::InProgress.as_str(),
                ],
            )
            .await?;
            Ok(completed == 1)
        })
    }

    async fn release_idempotency_key(
        &self,
        phone_number_id: &PhoneNumberId,
        key: &IdempotencyKey,
        attempt: i64,
        now: UnixTime,
    ) -> StoreResult<bool> {
        transaction!(self.db, |tx| {
            let released = execute(
                tx,
                "UPDATE idempotency_keys SET claimed_until = least(claimed_until, $4)
                 WHERE phone_number_id = $1 AND key = $2 AND attempt = $3 AND state = $5",
                &[
                    &phone_number_id.as_str(),
                    &key.as_str(),
                    &attempt,
                    &now.0,
                    &IdempotencyState::InProgress.as_str(),
                ],
            )
            .await?;
            Ok(released == 1)
        })
    }

    async fn prune_idempotency_keys(&self, created_before: UnixTime) -> StoreResult<u64> {
        transaction!(self.db, |tx| {
            execute(
                tx,
                "DELETE FROM idempotency_keys WHERE created_at < $1",
                &[&created_before.0],
            )
            .await
        })
    }
}

/// Queues a webhook job, in the caller's transaction. A job already queued under its id is
/// left as it is: the same event reported again (a record applied twice) is delivered once.
pub(super) async fn queue_webhook(tx: &impl GenericClient, job: &WebhookJob) -> TxResult<()> {
    execute(
        tx,
        "INSERT INTO webhooks (id, waba_id, body_sealed, attempts, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT DO NOTHING",
        &[
            &job.id,
            &job.waba_id.as_str(),
            &job.body_sealed,
            &i64::from(job.attempts),
            &job.next_attempt_at.0,
            &job.created_at.0,
        ],
    )
    .await?;
    Ok(())
}

async fn select_key(
    c: &impl GenericClient,
    id: &PhoneNumberId,
    key: &IdempotencyKey,
) -> TxResult<Option<IdempotencyRecord>> {
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM idempotency_keys WHERE phone_number_id = $1 AND key = $2"
    );
    let row = query_opt(c, &sql, &[&id.as_str(), &key.as_str()]).await?;
    row.as_ref().map(key_from_row).transpose()
}

fn key_from_row(row: &Row) -> TxResult<IdempotencyRecord> {
    let status: Option<i64> = get(row, 7)?;
    let body: Option<String> = get(row, 8)?;
    let response = match status.zip(body) {
        Some((status, body)) => Some(StoredResponse {
            status: u16::try_from(status)
                .map_err(|_| super::db::backend(format!("HTTP status {status} is out of range")))?,
            body,
        }),
        None => None,
    };
    Ok(IdempotencyRecord {
        phone_number_id: parsed(row, 0)?,
        key: parsed(row, 1)?,
        fingerprint: get(row, 2)?,
        message_id: parsed(row, 3)?,
        state: named(row, 4, IdempotencyState::parse)?,
        attempt: get(row, 5)?,
        claimed_until: time(row, 6)?,
        response,
        created_at: time(row, 9)?,
    })
}

fn business_from_row(row: &Row) -> TxResult<BusinessRecord> {
    Ok(BusinessRecord {
        waba_id: parsed(row, 0)?,
        name: get(row, 1)?,
        app_secret_sealed: get(row, 2)?,
        webhook_url: get(row, 3)?,
        verify_token_sealed: get(row, 4)?,
        sandbox: get(row, 5)?,
        created_at: time(row, 6)?,
    })
}

fn number_from_row(row: &Row) -> TxResult<PhoneNumberRecord> {
    Ok(PhoneNumberRecord {
        id: parsed(row, 0)?,
        waba_id: parsed(row, 1)?,
        address: parsed(row, 2)?,
        display_phone_number: get(row, 3)?,
        verified_name: get(row, 4)?,
        created_at: time(row, 5)?,
    })
}

fn token_from_row(row: &Row) -> TxResult<AccessTokenRecord> {
    let revoked_at: Option<i64> = get(row, 5)?;
    Ok(AccessTokenRecord {
        id: get(row, 0)?,
        waba_id: parsed(row, 1)?,
        token_hash: get(row, 2)?,
        label: get(row, 3)?,
        created_at: time(row, 4)?,
        revoked_at: revoked_at.map(UnixTime),
    })
}

fn job_from_row(row: &Row) -> TxResult<WebhookJob> {
    Ok(WebhookJob {
        id: get(row, 0)?,
        waba_id: parsed(row, 1)?,
        body_sealed: get(row, 2)?,
        attempts: unsigned(row, 3)?,
        next_attempt_at: time(row, 4)?,
        created_at: time(row, 5)?,
    })
}
