//! One-time codes proving control of a number. Every write first takes an advisory lock on
//! the number, so issuing and checking codes for one number happen one at a time across all
//! nodes: two wrong guesses at once both count, and two requests at once are both counted
//! against the hourly limit (a row lock could not cover the number's first code, whose row
//! does not exist yet).

use crate::postgres::db::{TxResult, execute, get, lock, query_opt};
use crate::relay::VerificationOutcome;
use deadpool_postgres::GenericClient;
use ventana_core::{PhoneNumber, UnixTime};

/// Wrong guesses allowed per number per window, across reissued codes.
const MAX_CODE_ATTEMPTS: i64 = 5;
/// Codes issued per number per window.
const MAX_CODES_PER_WINDOW: i64 = 5;
/// The window both limits count in.
const VERIFICATION_WINDOW_SECS: i64 = 3600;

async fn lock_number(tx: &impl GenericClient, phone: &PhoneNumber) -> TxResult<()> {
    lock(tx, &format!("verification/{}", phone.digits())).await
}

pub(super) async fn put(
    tx: &impl GenericClient,
    phone: &PhoneNumber,
    code: &str,
    now: UnixTime,
    expires_at: UnixTime,
) -> TxResult<bool> {
    lock_number(tx, phone).await?;
    let window = query_opt(
        tx,
        "SELECT window_start, issued FROM verifications WHERE phone = $1",
        &[&phone.digits()],
    )
    .await?;
    let window: Option<(i64, i64)> = match window {
        Some(row) => Some((get(&row, 0)?, get(&row, 1)?)),
        None => None,
    };
    match window {
        Some((start, issued)) if now.0 < start + VERIFICATION_WINDOW_SECS => {
            if issued >= MAX_CODES_PER_WINDOW {
                return Ok(false);
            }
            // A new code, but the attempts made in this window still count.
            execute(
                tx,
                "UPDATE verifications SET code = $2, expires_at = $3, issued = issued + 1
                 WHERE phone = $1",
                &[&phone.digits(), &code, &expires_at.0],
            )
            .await?;
        }
        _ => {
            execute(
                tx,
                "INSERT INTO verifications (phone, code, expires_at, attempts, window_start, issued)
                 VALUES ($1, $2, $3, 0, $4, 1)
                 ON CONFLICT (phone) DO UPDATE
                 SET code = excluded.code, expires_at = excluded.expires_at, attempts = 0,
                     window_start = excluded.window_start, issued = 1",
                &[&phone.digits(), &code, &expires_at.0, &now.0],
            )
            .await?;
        }
    }
    Ok(true)
}

pub(super) async fn check(
    tx: &impl GenericClient,
    phone: &PhoneNumber,
    code: &str,
    now: UnixTime,
) -> TxResult<VerificationOutcome> {
    lock_number(tx, phone).await?;
    let pending = query_opt(
        tx,
        "SELECT code, expires_at, attempts, window_start FROM verifications WHERE phone = $1",
        &[&phone.digits()],
    )
    .await?;
    let Some(row) = pending else {
        return Ok(VerificationOutcome::NoneRequested);
    };
    let (stored, expires_at, attempts, start): (String, i64, i64, i64) =
        (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?, get(&row, 3)?);
    let in_window = now.0 < start + VERIFICATION_WINDOW_SECS;
    if in_window && attempts >= MAX_CODE_ATTEMPTS {
        return Ok(VerificationOutcome::TooManyAttempts);
    }
    if stored.is_empty() {
        return Ok(VerificationOutcome::NoneRequested);
    }
    if now.0 >= expires_at {
        burn(tx, phone).await?;
        return Ok(VerificationOutcome::Expired);
    }
    if stored == code {
        execute(
            tx,
            "DELETE FROM verifications WHERE phone = $1",
            &[&phone.digits()],
        )
        .await?;
        return Ok(VerificationOutcome::Verified);
    }
    execute(
        tx,
        "UPDATE verifications SET attempts = attempts + 1 WHERE phone = $1",
        &[&phone.digits()],
    )
    .await?;
    if attempts + 1 >= MAX_CODE_ATTEMPTS {
        burn(tx, phone).await?;
        return Ok(VerificationOutcome::TooManyAttempts);
    }
    Ok(VerificationOutcome::WrongCode)
}

async fn burn(tx: &impl GenericClient, phone: &PhoneNumber) -> TxResult<()> {
    execute(
        tx,
        "UPDATE verifications SET code = '' WHERE phone = $1",
        &[&phone.digits()],
    )
    .await?;
    Ok(())
}

pub(super) async fn peek(
    c: &impl GenericClient,
    phone: &PhoneNumber,
    now: UnixTime,
) -> TxResult<Option<String>> {
    let row = query_opt(
        c,
        "SELECT code FROM verifications WHERE phone = $1 AND expires_at > $2 AND code <> ''",
        &[&phone.digits(), &now.0],
    )
    .await?;
    row.map(|row| get(&row, 0)).transpose()
}
