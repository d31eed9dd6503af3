//! The gateway's units of work. The tables sit in the endpoint's own file or schema, so a
//! webhook job commits in the same transaction as the message it reports.

use crate::endpoint::WebhookJob;
use crate::sql::{Tx, TxResult, args};

// --- webhook jobs --------------------------------------------------------------------------

/// Queues a webhook job, in the caller's transaction. A job already queued under its id is
/// left as it is: the same event reported again (a record applied twice) is delivered once.
pub(crate) async fn queue_webhook(tx: &mut impl Tx, job: &WebhookJob) -> TxResult<()> {
    tx.execute(
        "INSERT INTO webhooks (id, waba_id, body_sealed, attempts, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT DO NOTHING",
        args![
            &job.id,
            job.waba_id.as_str(),
            &job.body_sealed,
            job.attempts,
            job.next_attempt_at,
            job.created_at,
        ],
    )
    .await?;
    Ok(())
}
