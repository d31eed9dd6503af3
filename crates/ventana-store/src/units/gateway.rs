//! The gateway's units of work: businesses, their numbers and access tokens, webhook jobs and
//! the leases of webhooks and hosted endpoints. The tables sit in the endpoint's own file or
//! schema, so a webhook job commits in the same transaction as the message it reports.
//!
//! - `idempotency`: the idempotency keys of sends.
//! - `webhooks`: the webhook queue, its delivery log, replay and dead letters.

pub(crate) mod idempotency;
pub(crate) mod webhooks;

use crate::endpoint::{AccessTokenRecord, BusinessRecord, PhoneNumberRecord};
use crate::sql::{Row, Tx, TxResult, args};
use ventana_core::{PhoneNumber, PhoneNumberId, UnixTime, WabaId};

// --- businesses ----------------------------------------------------------------------------

/// The business columns [`business_from_row`] reads.
macro_rules! business_columns {
    () => {
        "waba_id, name, app_secret_sealed, webhook_url, verify_token_sealed, sandbox, created_at"
    };
}

/// A taken WABA id is a conflict ([`Exists`](crate::ConflictKind::Exists)).
pub(crate) async fn create_business(tx: &mut impl Tx, b: &BusinessRecord) -> TxResult<()> {
    tx.execute(
        concat!(
            "INSERT INTO businesses (",
            business_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ),
        args![
            b.waba_id.as_str(),
            &b.name,
            &b.app_secret_sealed,
            b.webhook_url.as_deref(),
            &b.verify_token_sealed,
            b.sandbox,
            b.created_at,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn business(tx: &mut impl Tx, waba: &WabaId) -> TxResult<Option<BusinessRecord>> {
    let row = tx
        .query_opt(
            concat!(
                "SELECT ",
                business_columns!(),
                " FROM businesses WHERE waba_id = $1"
            ),
            args![waba.as_str()],
        )
        .await?;
    row.map(business_from_row).transpose()
}

pub(crate) async fn businesses(tx: &mut impl Tx) -> TxResult<Vec<BusinessRecord>> {
    let rows = tx
        .query(
            concat!(
                "SELECT ",
                business_columns!(),
                " FROM businesses ORDER BY created_at, waba_id"
            ),
            args![],
        )
        .await?;
    rows.into_iter().map(business_from_row).collect()
}

fn business_from_row(mut row: Row) -> TxResult<BusinessRecord> {
    Ok(BusinessRecord {
        waba_id: row.parsed(0)?,
        name: row.string(1)?,
        app_secret_sealed: row.take_blob(2)?,
        webhook_url: row.string_opt(3)?,
        verify_token_sealed: row.take_blob(4)?,
        sandbox: row.bool(5)?,
        created_at: row.time(6)?,
    })
}

// --- phone numbers -------------------------------------------------------------------------

/// The phone number columns [`number_from_row`] reads.
macro_rules! number_columns {
    () => {
        "id, waba_id, address, display_phone_number, verified_name, created_at"
    };
}

/// A taken id or number is a conflict ([`Exists`](crate::ConflictKind::Exists)). Every node
/// sharing the store hears of the new number once this commits, and hosts it at once.
pub(crate) async fn add_phone_number(tx: &mut impl Tx, n: &PhoneNumberRecord) -> TxResult<()> {
    tx.execute(
        concat!(
            "INSERT INTO phone_numbers (",
            number_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6)"
        ),
        args![
            n.id.as_str(),
            n.waba_id.as_str(),
            n.address.digits(),
            &n.display_phone_number,
            &n.verified_name,
            n.created_at,
        ],
    )
    .await?;
    tx.announce_numbers().await
}

pub(crate) async fn phone_number(
    tx: &mut impl Tx,
    id: &PhoneNumberId,
) -> TxResult<Option<PhoneNumberRecord>> {
    let row = tx
        .query_opt(
            concat!(
                "SELECT ",
                number_columns!(),
                " FROM phone_numbers WHERE id = $1"
            ),
            args![id.as_str()],
        )
        .await?;
    row.map(number_from_row).transpose()
}

pub(crate) async fn phone_number_by_address(
    tx: &mut impl Tx,
    address: &PhoneNumber,
) -> TxResult<Option<PhoneNumberRecord>> {
    let row = tx
        .query_opt(
            concat!(
                "SELECT ",
                number_columns!(),
                " FROM phone_numbers WHERE address = $1"
            ),
            args![address.digits()],
        )
        .await?;
    row.map(number_from_row).transpose()
}

pub(crate) async fn phone_numbers(tx: &mut impl Tx) -> TxResult<Vec<PhoneNumberRecord>> {
    let rows = tx
        .query(
            concat!(
                "SELECT ",
                number_columns!(),
                " FROM phone_numbers ORDER BY created_at, id"
            ),
            args![],
        )
        .await?;
    rows.into_iter().map(number_from_row).collect()
}

fn number_from_row(row: Row) -> TxResult<PhoneNumberRecord> {
    Ok(PhoneNumberRecord {
        id: row.parsed(0)?,
        waba_id: row.parsed(1)?,
        address: row.parsed(2)?,
        display_phone_number: row.string(3)?,
        verified_name: row.string(4)?,
        created_at: row.time(5)?,
    })
}

// --- access tokens -------------------------------------------------------------------------

/// The access token columns [`token_from_row`] reads.
macro_rules! token_columns {
    () => {
        "id, waba_id, token_hash, label, created_at, revoked_at, person"
    };
}

pub(crate) async fn add_token(tx: &mut impl Tx, t: &AccessTokenRecord) -> TxResult<()> {
    tx.execute(
        concat!(
            "INSERT INTO access_tokens (",
            token_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ),
        args![
            &t.id,
            t.waba_id.as_str(),
            &t.token_hash,
            &t.label,
            t.created_at,
            t.revoked_at,
            t.person.as_deref(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn token_by_hash(
    tx: &mut impl Tx,
    token_hash: &str,
) -> TxResult<Option<AccessTokenRecord>> {
    let row = tx
        .query_opt(
            concat!(
                "SELECT ",
                token_columns!(),
                " FROM access_tokens WHERE token_hash = $1"
            ),
            args![token_hash],
        )
        .await?;
    row.map(token_from_row).transpose()
}

pub(crate) async fn tokens(tx: &mut impl Tx, waba: &WabaId) -> TxResult<Vec<AccessTokenRecord>> {
    let rows = tx
        .query(
            concat!(
                "SELECT ",
                token_columns!(),
                " FROM access_tokens WHERE waba_id = $1 ORDER BY created_at, id"
            ),
            args![waba.as_str()],
        )
        .await?;
    rows.into_iter().map(token_from_row).collect()
}

/// Revoking keeps the first revocation time: a token is revoked once. False if the business
/// has no such live token.
pub(crate) async fn revoke_token(
    tx: &mut impl Tx,
    waba: &WabaId,
    id: &str,
    at: UnixTime,
) -> TxResult<bool> {
    let revoked = tx
        .execute(
            "UPDATE access_tokens SET revoked_at = $3
             WHERE waba_id = $1 AND id = $2 AND revoked_at IS NULL",
            args![waba.as_str(), id, at],
        )
        .await?;
    Ok(revoked == 1)
}

fn token_from_row(row: Row) -> TxResult<AccessTokenRecord> {
    Ok(AccessTokenRecord {
        id: row.string(0)?,
        waba_id: row.parsed(1)?,
        token_hash: row.string(2)?,
        label: row.string(3)?,
        created_at: row.time(4)?,
        revoked_at: row.time_opt(5)?,
        person: row.string_opt(6)?,
    })
}

// --- leases of hosted endpoints ------------------------------------------------------------

/// Takes or renews `node`'s lease on `owner`'s endpoint until `now + ttl_secs`; true if
/// `node` holds it now. One statement: on PostgreSQL, of two nodes racing for a free or
/// expired lease, the second waits for the first's row and then finds it held.
pub(crate) async fn acquire_endpoint(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    node: &str,
    now: UnixTime,
    ttl_secs: i64,
) -> TxResult<bool> {
    let until = UnixTime(now.0.saturating_add(ttl_secs));
    let holder = tx
        .query_opt(
            "INSERT INTO endpoint_leases (owner, node, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (owner) DO UPDATE
             SET node = excluded.node, expires_at = excluded.expires_at
             WHERE endpoint_leases.node = excluded.node
                OR endpoint_leases.expires_at <= $4
             RETURNING node",
            args![owner.digits(), node, until, now],
        )
        .await?;
    match holder {
        Some(row) => Ok(row.text(0)? == node),
        None => Ok(false),
    }
}

/// Gives the lease up, if `node` holds it.
pub(crate) async fn release_endpoint(
    tx: &mut impl Tx,
    owner: &PhoneNumber,
    node: &str,
) -> TxResult<()> {
    tx.execute(
        "DELETE FROM endpoint_leases WHERE owner = $1 AND node = $2",
        args![owner.digits(), node],
    )
    .await?;
    Ok(())
}
