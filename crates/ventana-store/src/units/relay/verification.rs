//! One-time codes proving control of a number.
//!
//! On PostgreSQL every write first takes [`Tx::lock`] on the number, so issuing and checking
//! codes for one number happen one at a time across all nodes: two wrong guesses at once both
//! count, and two requests at once are both counted against the hourly limit (a row lock
//! could not cover the number's first code, whose row does not exist yet). SQLite's one
//! writer gives the same order without a lock.

use crate::relay::VerificationOutcome;
use crate::sql::{Tx, TxResult, args};
use ventana_core::{PhoneNumber, UnixTime};

/// Wrong guesses allowed per number per window, across reissued codes.
const MAX_CODE_ATTEMPTS: i64 = 5;
/// Codes issued per number per window.
const MAX_CODES_PER_WINDOW: i64 = 5;
/// The window both limits count in.
const VERIFICATION_WINDOW_SECS: i64 = 3600;

async fn lock_number(tx: &mut impl Tx, phone: &PhoneNumber) -> TxResult<()> {
    tx.lock(&format!("verification/{}", phone.digits())).await
}

/// Stores a new code for `phone`, unless the window's limit of codes is reached (`false`).
pub(crate) async fn put(
    tx: &mut impl Tx,
    phone: &PhoneNumber,
    code: &str,
    now: UnixTime,
    expires_at: UnixTime,
) -> TxResult<bool> {
    lock_number(tx, phone).await?;
    let window = tx
        .query_opt(
            "SELECT window_start, issued FROM verifications WHERE phone = $1",
            args![phone.digits()],
        )
        .await?;
    let window = match window {
        Some(row) => Some((row.int(0)?, row.int(1)?)),
        None => None,
    };
    match window {
        Some((start, issued)) if now.0 < start + VERIFICATION_WINDOW_SECS => {
            if issued >= MAX_CODES_PER_WINDOW {
                return Ok(false);
            }
            // A new code, but the attempts made in this window still count.
            tx.execute(
                "UPDATE verifications SET code = $2, expires_at = $3, issued = issued + 1
                 WHERE phone = $1",
                args![phone.digits(), code, expires_at],
            )
            .await?;
        }
        _ => {
            tx.execute(
                "INSERT INTO verifications (phone, code, expires_at, attempts, window_start, issued)
                 VALUES ($1, $2, $3, 0, $4, 1)
                 ON CONFLICT (phone) DO UPDATE
                 SET code = excluded.code, expires_at = excluded.expires_at, attempts = 0,
                     window_start = excluded.window_start, issued = 1",
                args![phone.digits(), code, expires_at, now],
            )
            .await?;
        }
    }
    Ok(true)
}

pub(crate) async fn check(
    tx: &mut impl Tx,
    phone: &PhoneNumber,
    code: &str,
    now: UnixTime,
) -> TxResult<VerificationOutcome> {
    lock_number(tx, phone).await?;
    let pending = tx
        .query_opt(
            "SELECT code, expires_at, attempts, window_start FROM verifications WHERE phone = $1",
            args![phone.digits()],
        )
        .await?;
    let Some(row) = pending else {
        return Ok(VerificationOutcome::NoneRequested);
    };
    let (expires_at, attempts, start) = (row.int(1)?, row.int(2)?, row.int(3)?);
    let stored = row.text(0)?;
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
        // Spent, not deleted: the window's counts outlive a success, or registering a device
        // would open a fresh window of codes (and of guesses) each time.
        burn(tx, phone).await?;
        return Ok(VerificationOutcome::Verified);
    }
    tx.execute(
        "UPDATE verifications SET attempts = attempts + 1 WHERE phone = $1",
        args![phone.digits()],
    )
    .await?;
    if attempts + 1 >= MAX_CODE_ATTEMPTS {
        burn(tx, phone).await?;
        return Ok(VerificationOutcome::TooManyAttempts);
    }
    Ok(VerificationOutcome::WrongCode)
}

/// Spends the code, keeping the window's counts.
async fn burn(tx: &mut impl Tx, phone: &PhoneNumber) -> TxResult<()> {
    tx.execute(
        "UPDATE verifications SET code = '' WHERE phone = $1",
        args![phone.digits()],
    )
    .await?;
    Ok(())
}

/// The live code of `phone`, if any (for a sandbox's operator).
pub(crate) async fn peek(
    tx: &mut impl Tx,
    phone: &PhoneNumber,
    now: UnixTime,
) -> TxResult<Option<String>> {
    let row = tx
        .query_opt(
            "SELECT code FROM verifications WHERE phone = $1 AND expires_at > $2 AND code <> ''",
            args![phone.digits(), now],
        )
        .await?;
    row.map(|row| row.string(0)).transpose()
}
