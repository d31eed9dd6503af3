//! Rating: the pricing policy versions, the pricing inputs a business message is accepted
//! with, and metering a delivery into the ledger.
//!
//! A business message to a user is accepted with what it is for pricing ([`Inputs`]: its
//! business, category, whether it is a template, the window as it stood, whether it was sent
//! by hand). When a device of the user reports it delivered (or read), [`meter`] rates it
//! under the policy version in force at that moment on the business's clock and appends the
//! charge, once per message, with the usage counters and conversations it moves, in the same
//! transaction, under the business's ledger lock. So the counters a rating reads are exactly
//! the entries before it in the chain, which is how `billing verify` can rate every entry
//! again ([`ventana_core::pricing::Usage`]).

use super::directory::business_clock;
use super::ledger::{append_charge, entry_of};
use crate::ConflictKind;
use crate::ledger::{PolicyAdded, PolicyVersion};
use crate::sql::{Tx, TxResult, args, backend, conflict};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use ventana_core::pricing::{
    Charge, ConversationNote, Decision, Delivery, Model, Month, Policy, PricingCategory,
    PricingNote, WindowState, conversation_note, month_count,
};
use ventana_core::protocol::PricedMessage;
use ventana_core::{BusinessClock, MessageId, PhoneNumber, UnixTime, WabaId};

/// What a business message is for pricing, fixed when it is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Inputs {
    pub(crate) waba: WabaId,
    pub(crate) category: PricingCategory,
    pub(crate) template: bool,
    pub(crate) window: WindowState,
    pub(crate) manual: bool,
}

// --- policy versions -------------------------------------------------------------------------

/// Parsed policies by digest of their text: versions never change once loaded, so a parse is
/// good for the life of the process, on every node.
static PARSED: Mutex<BTreeMap<String, Arc<Policy>>> = Mutex::new(BTreeMap::new());

fn parsed(digest: &str) -> Option<Arc<Policy>> {
    let cache = PARSED.lock().unwrap_or_else(|p| p.into_inner());
    cache.get(digest).cloned()
}

fn parse(digest: &str, text: &str) -> TxResult<Arc<Policy>> {
    let policy = Arc::new(Policy::parse(text).map_err(|e| {
        backend(format!(
            "a stored pricing policy no longer reads ({e}); was it edited in the database?"
        ))
    })?);
    let mut cache = PARSED.lock().unwrap_or_else(|p| p.into_inner());
    cache.insert(digest.to_owned(), Arc::clone(&policy));
    Ok(policy)
}

/// Adds a checked policy file as a new version. Loading the same version with the same text
/// again changes nothing (every node loads its file at start); the same version name with
/// another text is refused: a version, once loaded, is what past charges were rated by.
pub(crate) async fn add_policy(
    tx: &mut impl Tx,
    text: &str,
    at: UnixTime,
) -> TxResult<PolicyAdded> {
    let policy = Policy::parse(text).map_err(|e| conflict(ConflictKind::State, e.to_string()))?;
    let digest = Policy::digest(text);
    tx.lock("policy_versions").await?;
    if let Some(row) = tx
        .query_opt(
            "SELECT digest FROM policy_versions WHERE version = $1",
            args![&policy.version],
        )
        .await?
    {
        if row.text(0)? != digest {
            return Err(conflict(
                ConflictKind::Exists,
                format!(
                    "pricing policy version {:?} is already loaded with other content; a changed \
                     policy needs a new `version`",
                    policy.version
                ),
            ));
        }
        let existing = policy_named(tx, &policy.version).await?;
        return Ok(PolicyAdded::Unchanged(existing.ok_or_else(|| {
            backend("a policy version vanished while its lock was held")
        })?));
    }
    tx.execute(
        "INSERT INTO policy_versions (version, effective_from, digest, text, loaded_at)
         VALUES ($1, $2, $3, $4, $5)",
        args![&policy.version, policy.effective_from, &digest, text, at],
    )
    .await?;
    Ok(PolicyAdded::Added(PolicyVersion {
        version: policy.version.clone(),
        effective_from: policy.effective_from,
        digest,
        loaded_at: at,
        text: text.to_owned(),
    }))
}

/// Every version, in the order they were loaded.
pub(crate) async fn policies(tx: &mut impl Tx) -> TxResult<Vec<PolicyVersion>> {
    let rows = tx
        .query(
            "SELECT version, effective_from, digest, loaded_at, text FROM policy_versions
             ORDER BY seq",
            args![],
        )
        .await?;
    rows.iter().map(version_from_row).collect()
}

/// Reads `version, effective_from, digest, loaded_at, text`, in that order.
fn version_from_row(row: &crate::sql::Row) -> TxResult<PolicyVersion> {
    Ok(PolicyVersion {
        version: row.string(0)?,
        effective_from: row.time(1)?,
        digest: row.string(2)?,
        loaded_at: row.time(3)?,
        text: row.string(4)?,
    })
}

pub(crate) async fn policy_named(
    tx: &mut impl Tx,
    version: &str,
) -> TxResult<Option<PolicyVersion>> {
    let row = tx
        .query_opt(
            "SELECT version, effective_from, digest, loaded_at, text FROM policy_versions
             WHERE version = $1",
            args![version],
        )
        .await?;
    row.as_ref().map(version_from_row).transpose()
}

/// The policy in force at `at`: of the versions effective by then, the latest to take effect
/// (the one loaded last, of two taking effect at once).
pub(crate) async fn policy_at(tx: &mut impl Tx, at: UnixTime) -> TxResult<Option<Arc<Policy>>> {
    let Some(row) = tx
        .query_opt(
            "SELECT digest, version FROM policy_versions WHERE effective_from <= $1
             ORDER BY effective_from DESC, seq DESC LIMIT 1",
            args![at],
        )
        .await?
    else {
        return Ok(None);
    };
    let digest = row.string(0)?;
    if let Some(policy) = parsed(&digest) {
        return Ok(Some(policy));
    }
    let text = tx
        .query_one(
            "SELECT text FROM policy_versions WHERE version = $1",
            args![row.text(1)?],
        )
        .await?
        .string(0)?;
    parse(&digest, &text).map(Some)
}

// --- inputs ----------------------------------------------------------------------------------

/// Records the pricing inputs of an accepted submission.
pub(crate) async fn record_inputs(
    tx: &mut impl Tx,
    sender: &PhoneNumber,
    id: &MessageId,
    inputs: &Inputs,
) -> TxResult<()> {
    tx.execute(
        "UPDATE submissions SET waba_id = $3, category = $4, template = $5, window_state = $6,
                manual = $7
         WHERE sender = $1 AND id = $2",
        args![
            sender.digits(),
            id.as_str(),
            inputs.waba.as_str(),
            inputs.category.as_str(),
            inputs.template,
            inputs.window.as_str(),
            inputs.manual,
        ],
    )
    .await?;
    Ok(())
}

/// Whether business `waba` already has a message `id` (from any of its numbers). Takes a lock
/// on the pair, so two numbers accepting the same id at once on PostgreSQL are decided one
/// after the other and the second sees the first.
pub(crate) async fn id_taken(tx: &mut impl Tx, waba: &WabaId, id: &MessageId) -> TxResult<bool> {
    tx.lock(&format!(
        "business-message/{}/{}",
        waba.as_str(),
        id.as_str()
    ))
    .await?;
    let row = tx
        .query_opt(
            "SELECT 1 FROM submissions WHERE waba_id = $1 AND id = $2",
            args![waba.as_str(), id.as_str()],
        )
        .await?;
    Ok(row.is_some())
}

/// How the `sent` status describes an accepted business message (a first acceptance, a
/// retry, a resend): from its ledger entry once it was charged, else rated as of `at`.
pub(crate) async fn sent_note(
    tx: &mut impl Tx,
    business: &PhoneNumber,
    user: &PhoneNumber,
    id: &MessageId,
    at: UnixTime,
) -> TxResult<Option<PricingNote>> {
    let Some(inputs) = inputs_of(tx, business, user, id).await? else {
        return Ok(None);
    };
    if let Some(entry) = entry_of(tx, &inputs.waba, id).await? {
        return note_of(tx, &entry.charge).await.map(Some);
    }
    prospect(tx, &inputs, user, id, at).await
}

/// The pricing inputs of `business`'s message `id` to `user`, if it was accepted as one.
pub(crate) async fn inputs_of(
    tx: &mut impl Tx,
    business: &PhoneNumber,
    user: &PhoneNumber,
    id: &MessageId,
) -> TxResult<Option<Inputs>> {
    let row = tx
        .query_opt(
            "SELECT waba_id, category, template, window_state, manual FROM submissions
             WHERE sender = $1 AND id = $2 AND recipient = $3 AND waba_id IS NOT NULL",
            args![business.digits(), id.as_str(), user.digits()],
        )
        .await?;
    row.map(|row| {
        Ok(Inputs {
            waba: row.parsed(0)?,
            category: row.named(1, PricingCategory::parse)?,
            template: row.bool(2)?,
            window: row.named(3, WindowState::parse)?,
            manual: row.bool(4)?,
        })
    })
    .transpose()
}

// --- rating ----------------------------------------------------------------------------------

/// A message rated: under which policy version, what it costs, and its conversation.
pub(crate) struct Rated {
    /// The version in force, and its card's currency and precision.
    pub(crate) version: String,
    pub(crate) currency: String,
    pub(crate) precision: u8,
    pub(crate) decision: Decision,
    pub(crate) conversation: Option<ConversationNote>,
}

/// Rates `id` (to `user`) as if delivered at `at`, from the business's usage so far. Writes
/// nothing. `None` when no policy is in force at `at`.
pub(crate) async fn rate(
    tx: &mut impl Tx,
    inputs: &Inputs,
    user: &PhoneNumber,
    id: &MessageId,
    at: UnixTime,
) -> TxResult<Option<Rated>> {
    let Some(base) = policy_at(tx, at).await? else {
        return Ok(None);
    };
    let policy = base.for_business(&inputs.waba);
    let month = Month::of(at).to_string();
    let mut counted = BTreeMap::new();
    let mut opened = 0_u64;
    for row in tx
        .query(
            "SELECT category, counted, opened FROM billing_usage
             WHERE waba_id = $1 AND month = $2",
            args![inputs.waba.as_str(), &month],
        )
        .await?
    {
        counted.insert(row.named(0, PricingCategory::parse)?, row.unsigned(1)?);
        opened += row.unsigned::<u64>(2)?;
    }
    let open = if policy.model == Model::Conversation2022 {
        tx.query_opt(
            "SELECT id, expires_at FROM conversations
             WHERE waba_id = $1 AND user_address = $2 AND category = $3 AND expires_at > $4
             ORDER BY expires_at DESC LIMIT 1",
            args![
                inputs.waba.as_str(),
                user.digits(),
                inputs.category.as_str(),
                at
            ],
        )
        .await?
        .map(|row| Ok::<_, crate::sql::TxError>((row.string(0)?, row.time(1)?)))
        .transpose()?
    } else {
        None
    };
    let delivery = Delivery {
        category: inputs.category,
        template: inputs.template,
        window: inputs.window,
        destination: user,
        charged_this_month: month_count(policy.model, inputs.category, &counted),
        conversation_open: open.is_some(),
        conversations_this_month: opened,
        manual: inputs.manual,
    };
    let decision = policy.rate(&delivery);
    let conversation = conversation_note(&decision, &delivery, (&inputs.waba, id, at), open);
    Ok(Some(Rated {
        version: policy.version.clone(),
        currency: policy.currency.clone(),
        precision: policy.precision,
        decision,
        conversation,
    }))
}

/// How the `sent` status describes a message just accepted: rated as if delivered now.
pub(crate) async fn prospect(
    tx: &mut impl Tx,
    inputs: &Inputs,
    user: &PhoneNumber,
    id: &MessageId,
    at: UnixTime,
) -> TxResult<Option<PricingNote>> {
    Ok(rate(tx, inputs, user, id, at)
        .await?
        .map(|r| PricingNote::of(&r.decision, r.conversation)))
}

/// Meters a `delivered` or `read` receipt of `user`'s for `business`'s messages `ids`: each
/// accepted business message among them is charged once (a second report of it finds its
/// entry), and its status is priced from its entry. Ids that name no such message are left
/// out.
pub(crate) async fn meter(
    tx: &mut impl Tx,
    business: &PhoneNumber,
    user: &PhoneNumber,
    ids: &[MessageId],
    wall: UnixTime,
) -> TxResult<Vec<PricedMessage>> {
    let mut priced = Vec::with_capacity(ids.len());
    let mut clocks: BTreeMap<WabaId, BusinessClock> = BTreeMap::new();
    for id in ids {
        let Some(inputs) = inputs_of(tx, business, user, id).await? else {
            continue;
        };
        tx.lock(&format!("ledger/{}", inputs.waba.as_str())).await?;
        if let Some(entry) = entry_of(tx, &inputs.waba, id).await? {
            let pricing = note_of(tx, &entry.charge).await?;
            priced.push(PricedMessage {
                id: id.clone(),
                pricing,
            });
            continue;
        }
        let clock = match clocks.get(&inputs.waba) {
            Some(clock) => *clock,
            None => {
                let clock = business_clock(tx, &inputs.waba)
                    .await?
                    .unwrap_or(BusinessClock::LIVE);
                clocks.insert(inputs.waba.clone(), clock);
                clock
            }
        };
        let at = clock.now(wall);
        let Some(rated) = rate(tx, &inputs, user, id, at).await? else {
            return Err(backend(format!(
                "no pricing policy is in force at {at:?}: the node loads one at start"
            )));
        };
        let Rated {
            version,
            currency,
            precision,
            decision,
            conversation,
        } = rated;
        let charge = Charge {
            waba_id: inputs.waba.clone(),
            message_id: id.clone(),
            destination: user.clone(),
            delivered_at: at,
            policy_version: version,
            model: decision.model,
            category: decision.category,
            template: inputs.template,
            window: inputs.window,
            pricing_type: decision.pricing_type,
            manual: inputs.manual,
            rate: decision.rate,
            amount: decision.amount,
            currency,
            precision,
            conversation_id: conversation.as_ref().map(|c| c.id.clone()),
        };
        append_charge(tx, &charge).await?;
        count(tx, &charge, &decision).await?;
        if decision.opens_conversation
            && let Some(c) = &conversation
        {
            tx.execute(
                "INSERT INTO conversations
                     (waba_id, user_address, category, id, opened_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                args![
                    inputs.waba.as_str(),
                    user.digits(),
                    charge.category.as_str(),
                    &c.id,
                    at,
                    c.expires_at
                ],
            )
            .await?;
        }
        priced.push(PricedMessage {
            id: id.clone(),
            pricing: PricingNote::of(&decision, conversation),
        });
    }
    Ok(priced)
}

/// Moves the month's usage counters by one rated message.
async fn count(tx: &mut impl Tx, charge: &Charge, decision: &Decision) -> TxResult<()> {
    let counted = i64::from(decision.counts());
    let opened = i64::from(decision.opens_conversation);
    if counted == 0 && opened == 0 {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO billing_usage (waba_id, month, category, counted, opened)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (waba_id, month, category) DO UPDATE
         SET counted = billing_usage.counted + excluded.counted,
             opened = billing_usage.opened + excluded.opened",
        args![
            charge.waba_id.as_str(),
            &Month::of(charge.delivered_at).to_string(),
            charge.category.as_str(),
            counted,
            opened,
        ],
    )
    .await?;
    Ok(())
}

/// The status webhook's pricing of a charged message, from its entry.
async fn note_of(tx: &mut impl Tx, charge: &Charge) -> TxResult<PricingNote> {
    let conversation = match &charge.conversation_id {
        Some(id) => tx
            .query_opt(
                "SELECT category, expires_at FROM conversations WHERE waba_id = $1 AND id = $2",
                args![charge.waba_id.as_str(), id],
            )
            .await?
            .map(|row| {
                Ok::<_, crate::sql::TxError>(ConversationNote {
                    id: id.clone(),
                    origin: row.named(0, PricingCategory::parse)?,
                    expires_at: row.time(1)?,
                })
            })
            .transpose()?,
        None => None,
    };
    Ok(PricingNote {
        billable: charge.amount.0 > 0,
        model: charge.model,
        category: charge.category,
        pricing_type: charge.pricing_type,
        conversation,
    })
}
