//! What every actor shares: the store, the link, the announcer, the clock, the DH cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use secret_core::chat::Event;
use secret_core::dh::DhConfigCache;
use tglink::Link;

use crate::errors_api::ServiceError;
use crate::records::{self, RequestRecord};
use crate::store::{Store, Tree};

/// Where the daemon tells the outside world what happened (the D-Bus layer; tests record).
/// Called only after what is announced is durable.
pub trait Announce: Send + Sync + 'static {
    /// A request has its final result.
    fn request_done(&self, request: RequestRecord) -> BoxFuture<'static, ()>;
    /// Events of a chat, in order.
    fn chat_events(&self, chat_id: i32, events: Vec<Event>) -> BoxFuture<'static, ()>;
    /// The chat as it now durably is (after every commit that changed it, before the
    /// commit's events are announced). Must not block.
    fn chat_view(&self, _view: ChatView) {}
    /// The login state changed: the account became logged out ([`Shared::logged_out`]) or
    /// signed in again, or an authorized call was answered for the first time since the start
    /// or the last logout (the user id is known then). `ended`: logged out because the
    /// authorization ended (a `Logout`, or Telegram ended the authorization of the key that
    /// worked), not only because a key was found logged out. Must not block.
    fn login_changed(&self, _ended: bool) {}
}

/// A chat as the outside world sees it (the D-Bus properties): its records' summary and the
/// number its next inbox event gets. Never the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatView {
    /// From the chat's records.
    pub summary: secret_core::chat::ChatSummary,
    /// The number the chat's next inbox event gets.
    pub next_event: u64,
}

/// A `Logout` under way ([`Shared::logging_out`]).
pub struct LoggingOut<'a>(&'a Shared);

impl Drop for LoggingOut<'_> {
    fn drop(&mut self) {
        self.0.logging_out.store(false, Ordering::SeqCst);
    }
}

/// What names the home DC's auth key in [`records::SIGNED_IN_KEY`]: the first 8 bytes of its
/// SHA-256 (not the key).
fn key_digest(link: &Link) -> Option<[u8; 8]> {
    let snap = link.session().snapshot();
    let key = snap.dcs.iter().find(|d| d.id == snap.home_dc)?.auth_key?;
    secret_core::crypto::sha256(&[&key])
        .get(..8)?
        .try_into()
        .ok()
}

/// An announcer that tells nobody.
#[derive(Debug, Default)]
pub struct Silent;

impl Announce for Silent {
    fn request_done(&self, _: RequestRecord) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
    fn chat_events(&self, _: i32, _: Vec<Event>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// What happens to a secret chat someone opens with us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptPolicy {
    /// It waits for the user: `Manager1.ChatRequested` is emitted, and `AcceptChat` or
    /// `DeclineChat` (or `DiscardChat`) decides (TDLib's behaviour: nothing is accepted
    /// without the user).
    Ask,
    /// Declined at once (`messages.discardEncryption`).
    Never,
    /// Accepted at once.
    Always,
    /// Accepted at once from these users; from anyone else it waits, as with `Ask`.
    Users(Vec<i64>),
}

/// What the accept policy decides for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Accept at once.
    Accept,
    /// Decline at once.
    Decline,
    /// Wait for the user.
    Ask,
}

impl AcceptPolicy {
    /// What to do with a request from `user_id`.
    pub fn decide(&self, user_id: i64) -> Decision {
        match self {
            AcceptPolicy::Ask => Decision::Ask,
            AcceptPolicy::Never => Decision::Decline,
            AcceptPolicy::Always => Decision::Accept,
            AcceptPolicy::Users(u) if u.contains(&user_id) => Decision::Accept,
            AcceptPolicy::Users(_) => Decision::Ask,
        }
    }

    /// As written in the config and on the command line (`ask`, `never`, `always`, or the user
    /// ids separated by commas).
    pub fn name(&self) -> String {
        match self {
            AcceptPolicy::Ask => "ask".into(),
            AcceptPolicy::Never => "never".into(),
            AcceptPolicy::Always => "always".into(),
            AcceptPolicy::Users(u) => u
                .iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// Parses [`AcceptPolicy::name`]'s form.
    pub fn parse(s: &str) -> Result<AcceptPolicy, String> {
        match s.trim() {
            "ask" => Ok(AcceptPolicy::Ask),
            "never" => Ok(AcceptPolicy::Never),
            "always" => Ok(AcceptPolicy::Always),
            list => list
                .split(',')
                .map(|p| {
                    p.trim().parse::<i64>().map_err(|_| {
                        format!("accept policy: {p:?} is not ask, never, always or a user id")
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(AcceptPolicy::Users),
        }
    }
}

/// The shared context.
pub struct Shared {
    /// The store.
    pub store: Arc<Store>,
    /// The Telegram link.
    pub link: Arc<Link>,
    /// The announcer.
    pub announce: Arc<dyn Announce>,
    /// Accept policy for incoming chats.
    pub accept: AcceptPolicy,
    dh: Mutex<DhConfigCache>,
    next_token: AtomicU64,
    /// The handles of the open requests (handle path → request id): an open request has no
    /// stored handle index (see `records`). Filled at start from the outbox
    /// ([`Shared::hold_handles`]), added to when a request is accepted, removed once the batch
    /// that made it final (and wrote its index) is durable.
    open_handles: Mutex<HashMap<String, u64>>,
    /// The random_ids callers chose for requests being accepted right now: random_id → (chat,
    /// the request's digest, claims). See [`Shared::claim_random_id`].
    claimed_ids: Mutex<HashMap<i64, Claimed>>,
    next_inbound: AtomicU64,
    /// Bit 0: Telegram said the account is logged out; the rest: logins completed here.
    login: AtomicU64,
    /// Telegram answered an authorized call, or a login completed, since the daemon started
    /// or last recorded a logout: the account is known to be signed in (at start it is not
    /// known either way until the first call).
    signed_in: std::sync::atomic::AtomicBool,
    /// This key's authorization is known to have worked: an authorized call was answered with
    /// it, in this run or an earlier one ([`records::SIGNED_IN_KEY`], which names the key), and
    /// its authorization was not finished since. The evidence that lets a logged-out answer
    /// mean "the authorization ended" ([`Shared::logged_out_since`]).
    key_worked: std::sync::atomic::AtomicBool,
    /// A `Logout` is under way: logged-out answers meanwhile are its own doing.
    logging_out: std::sync::atomic::AtomicBool,
    logged_in: tokio::sync::Notify,
    /// Telegram ended the authorization of the key that worked ([`Shared::logged_out_since`]):
    /// the daemon finishes it as a logout ([`Shared::until_authorization_ended`]).
    ended: tokio::sync::Notify,
    /// An ended authorization was recorded and not yet finished (by the watcher, or by a
    /// login that completed first: see [`Shared::take_ended`]).
    ended_pending: std::sync::atomic::AtomicBool,
    /// Held while the login state and the chats are changed together: a completed login (its
    /// closing of an earlier logout's chats and its sign-in), the finishing of an ended
    /// authorization, a logout a stop interrupted. One at a time, so that neither undoes the
    /// other.
    login_lock: tokio::sync::Mutex<()>,
    fatal: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// The context.
    pub fn new(
        store: Arc<Store>,
        link: Arc<Link>,
        announce: Arc<dyn Announce>,
        accept: AcceptPolicy,
        fatal: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<Arc<Shared>, crate::error::DaemonError> {
        let key_worked = key_digest(&link).is_some_and(|now| {
            matches!(store.get(Tree::Session, records::SIGNED_IN_KEY), Ok(Some(v)) if v == now)
        });
        Ok(Arc::new(Shared {
            store,
            link,
            announce,
            accept,
            dh: Mutex::new(DhConfigCache::new()),
            next_token: AtomicU64::new(now_micros()),
            open_handles: Mutex::new(HashMap::new()),
            claimed_ids: Mutex::new(HashMap::new()),
            next_inbound: AtomicU64::new(now_micros()),
            login: AtomicU64::new(0),
            signed_in: std::sync::atomic::AtomicBool::new(false),
            key_worked: std::sync::atomic::AtomicBool::new(key_worked),
            logging_out: std::sync::atomic::AtomicBool::new(false),
            logged_in: tokio::sync::Notify::new(),
            ended: tokio::sync::Notify::new(),
            ended_pending: std::sync::atomic::AtomicBool::new(false),
            login_lock: tokio::sync::Mutex::new(()),
            fatal: Mutex::new(Some(fatal)),
        }))
    }

    /// A fresh number for a handle token the daemon makes: it starts from the clock in µs at
    /// start, so it keeps increasing across restarts unless a run made more than one token per
    /// microsecond it lasted.
    pub fn token_seq(&self) -> u64 {
        self.next_token.fetch_add(1, Ordering::SeqCst)
    }

    /// Claims a random_id a caller chose for a request to `chat_id`, while the request is
    /// accepted (until the guard drops, after the accepting batch, which stores the owner, is
    /// durable). Telegram takes a random_id once per account: a message it refuses as
    /// RANDOM_ID_DUPLICATE has its seq slot and closes its chat. So the id is refused
    /// ([`ServiceError::BadRandomId`], nothing stored) when another chat owns it: stored
    /// ([`records::random_id_owner_key`]) or being accepted there now. The same chat may claim
    /// it again: that is a retry, which its actor answers with the first request's handle.
    ///
    /// A retry is the same request: `digest` (the request's content, see
    /// `service::request_digest`) must be the first one's, else the id is refused too (the
    /// first message stands; a caller reusing an id for a new message would otherwise be
    /// told it was sent). An owner stored without a digest (by an older daemon) takes any.
    pub fn claim_random_id(
        &self,
        random_id: i64,
        chat_id: i32,
        digest: [u8; 32],
    ) -> Result<RandomIdClaim<'_>, ServiceError> {
        let mut claimed = lock(&self.claimed_ids);
        if let Some((owner, first, _)) = claimed.get(&random_id)
            && (*owner != chat_id || *first != digest)
        {
            return Err(ServiceError::BadRandomId(random_id));
        }
        let stored = self
            .store
            .get(Tree::Meta, &records::random_id_owner_key(random_id))?;
        if let Some(v) = stored {
            match records::decode_random_id_owner(&v) {
                Some((owner, first)) if owner == chat_id && first.is_none_or(|f| f == digest) => {}
                Some(_) => return Err(ServiceError::BadRandomId(random_id)),
                None => {
                    return Err(ServiceError::Internal(format!(
                        "the stored owner of random_id {random_id} does not parse"
                    )));
                }
            }
        }
        claimed.entry(random_id).or_insert((chat_id, digest, 0)).2 += 1;
        Ok(RandomIdClaim {
            shared: self,
            random_id,
        })
    }

    /// The id of the open request whose handle is `path`.
    pub fn open_handle(&self, path: &str) -> Option<u64> {
        lock(&self.open_handles).get(path).copied()
    }

    /// These open requests' handles (at start, and when a request is accepted).
    pub fn hold_handles(&self, open: impl IntoIterator<Item = (String, u64)>) {
        lock(&self.open_handles).extend(open);
    }

    /// Forgets `path` if it still names request `id` (its final result and its stored index
    /// are durable).
    pub fn release_handle(&self, path: &str, id: u64) {
        let mut open = lock(&self.open_handles);
        if open.get(path) == Some(&id) {
            open.remove(path);
        }
    }

    /// The handle paths of the open requests.
    pub fn open_handle_paths(&self) -> Vec<String> {
        lock(&self.open_handles).keys().cloned().collect()
    }

    /// A fresh arrival number for an inbound message (increasing across restarts).
    pub fn inbound_seq(&self) -> u64 {
        let now = now_micros();
        let mut cur = self.next_inbound.load(Ordering::SeqCst);
        loop {
            let next = cur.max(now) + 1;
            match self
                .next_inbound
                .compare_exchange(cur, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next,
                Err(v) => cur = v,
            }
        }
    }

    /// The DH cache.
    pub fn dh(&self) -> MutexGuard<'_, DhConfigCache> {
        self.dh.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether Telegram said the account is logged out.
    pub fn logged_out(&self) -> bool {
        self.login.load(Ordering::SeqCst) & 1 == 1
    }

    /// How many logins completed in this process: read before a call, so that a "logged
    /// out" answer to it can be told from one that a login overtook
    /// ([`Shared::logged_out_since`]).
    pub fn login_epoch(&self) -> u64 {
        self.login.load(Ordering::SeqCst) >> 1
    }

    /// Records that the account is logged out by `Logout` or a logout a stop interrupted (the
    /// authorization ended), or in again by a completed login (then whoever waits in
    /// [`Shared::until_logged_in`] goes on, and a logged-out answer to a call made before is
    /// stale: see [`Shared::login_epoch`]).
    pub fn set_logged_out(&self, v: bool) {
        if v {
            self.signed_in.store(false, Ordering::SeqCst);
            self.key_worked.store(false, Ordering::SeqCst);
            let was = self.login.fetch_or(1, Ordering::SeqCst);
            if was & 1 == 0 {
                self.announce.login_changed(true);
            }
        } else {
            let was = self
                .login
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                    Some(((s >> 1) + 1) << 1)
                })
                .unwrap_or_else(|s| s);
            self.logged_in.notify_waiters();
            if was & 1 == 1 {
                self.announce.login_changed(false);
            }
        }
    }

    /// A call made at `epoch` ([`Shared::login_epoch`]) was answered "logged out" (`e`):
    /// recorded unless a login completed since (the answer is stale then). Whether it was
    /// recorded.
    ///
    /// When the answer says the authorization ended ([`tglink::authorization_ended`]), this key
    /// is known to have worked (`key_worked`) and no `Logout` is under way, the authorization
    /// probably ended elsewhere (the user terminated the session from another device) and
    /// Telegram discarded its secret chats: whoever waits in
    /// [`Shared::until_authorization_ended`] is woken to confirm it and finish it as a logout
    /// (announced as ended only then), and a login that completes first closes the chats
    /// itself ([`Shared::take_ended`]). Without that evidence (a key that never answered here:
    /// perhaps a wrong key file) nothing is concluded about the chats.
    pub fn logged_out_since(&self, epoch: u64, e: &tglink::CallError) -> bool {
        let Some(was) = self.set_logged_out_bit_at(epoch) else {
            return false;
        };
        self.signed_in.store(false, Ordering::SeqCst);
        let ended = tglink::authorization_ended(e.class, &e.name)
            && self.key_worked.load(Ordering::SeqCst)
            && !self.logging_out.load(Ordering::SeqCst);
        if ended && !self.ended_pending.swap(true, Ordering::SeqCst) {
            tracing::warn!(error = %e, "the account's authorization may have ended");
            self.ended.notify_one();
        }
        if was & 1 == 0 {
            self.announce.login_changed(false);
        }
        true
    }

    /// Sets the logged-out bit unless a login completed since `epoch`; the state before, if set.
    fn set_logged_out_bit_at(&self, epoch: u64) -> Option<u64> {
        self.login
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                (s >> 1 == epoch).then_some(s | 1)
            })
            .ok()
    }

    /// Returns when an authorization ended ([`Shared::logged_out_since`]); a wake-up that came
    /// while nobody waited is kept for the next wait.
    pub async fn until_authorization_ended(&self) {
        self.ended.notified().await;
    }

    /// Takes the recorded, unfinished end of the authorization ([`Shared::logged_out_since`]):
    /// whether there was one. Whoever takes it closes the chats (or decides that the end was
    /// not one), holding [`Shared::login_lock`].
    pub fn take_ended(&self) -> bool {
        self.ended_pending.swap(false, Ordering::SeqCst)
    }

    /// The end of the authorization is confirmed (a second answer said so) and being
    /// finished: the evidence that the key worked goes, and the announcer is told.
    pub fn confirm_ended(&self) {
        self.key_worked.store(false, Ordering::SeqCst);
        self.announce.login_changed(true);
    }

    /// The key proved unusable (not ended): its evidence goes, so that its logged-out answers
    /// no longer wake anyone until it works again.
    pub fn forget_key_worked(&self) {
        self.key_worked.store(false, Ordering::SeqCst);
    }

    /// A logout a stop interrupted is confirmed at `epoch` (the login epoch read before the
    /// question): recorded as [`Shared::set_logged_out`] does, unless a login completed since
    /// (then that login has closed the chats: it found the marker). Whether it was recorded.
    pub fn confirm_logout_since(&self, epoch: u64) -> bool {
        let recorded = self.set_logged_out_bit_at(epoch).is_some();
        if recorded {
            self.signed_in.store(false, Ordering::SeqCst);
            self.key_worked.store(false, Ordering::SeqCst);
            self.announce.login_changed(true);
        }
        recorded
    }

    /// Serialises the changes of the login state that go with the chats (see the field).
    pub async fn login_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.login_lock.lock().await
    }

    /// Marks a `Logout` under way until the guard drops (see [`Shared::logged_out_since`]).
    pub fn logging_out(&self) -> LoggingOut<'_> {
        self.logging_out.store(true, Ordering::SeqCst);
        LoggingOut(self)
    }

    /// Records that Telegram answered an authorized call (or a login completed). The first
    /// time since the start or a logout, the announcer is told (the user id is known now); the
    /// first time since this key's authorization began, that is stored
    /// ([`records::SIGNED_IN_KEY`]).
    pub fn set_signed_in(&self) {
        if !self.signed_in.swap(true, Ordering::SeqCst) {
            self.announce.login_changed(false);
        }
        if !self.key_worked.swap(true, Ordering::SeqCst)
            && let Some(digest) = key_digest(&self.link)
        {
            let mut b = crate::store::Batch::new();
            b.put(Tree::Session, records::SIGNED_IN_KEY, digest);
            // Queued at once; nothing waits for it (without it, an end is only not concluded).
            drop(self.store.commit_then(b, |r| {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "the signed-in key not recorded");
                }
            }));
        }
    }

    /// Telegram answered an authorized call made at login epoch `epoch`: the account is
    /// signed in, unless a logout was recorded or a login completed since the call was made
    /// (an answer to a call made before them says nothing after them; only a login signs in
    /// again).
    pub fn answered(&self, epoch: u64) {
        if self.login.load(Ordering::SeqCst) == epoch << 1 {
            self.set_signed_in();
        }
    }

    /// Whether the account is known to be signed in: see the field. Login steps are refused
    /// only then, so a daemon started after a logout takes a login at once, before its first
    /// call has told it that the key is logged out.
    pub fn signed_in(&self) -> bool {
        !self.logged_out() && self.signed_in.load(Ordering::SeqCst)
    }

    /// Returns once the account is not logged out (at once if it is not now); a login that
    /// completes between the check and the wait is not missed.
    pub async fn until_logged_in(&self) {
        loop {
            let notified = self.logged_in.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.logged_out() {
                return;
            }
            notified.await;
        }
    }

    /// A `fatal` that can be moved into a task.
    pub fn fatal_sender(&self) -> impl Fn(String) + 'static {
        let tx = self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone();
        move |why: String| {
            tracing::error!(%why, "stopping");
            if let Some(tx) = tx.as_ref() {
                let _ = tx.send(why);
            }
        }
    }

    /// Something the daemon cannot continue after (the store failed): it stops.
    pub fn fatal(&self, why: String) {
        tracing::error!(%why, "stopping");
        let tx = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = tx.as_ref() {
            let _ = tx.send(why);
        }
    }
}

/// Now, in Unix seconds (the chats' clock).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A lock that survives a panic of another holder (the map stays usable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Who claims a random_id now: (chat, the request's digest, how many claims).
type Claimed = (i32, [u8; 32], usize);

/// A random_id claimed for a request being accepted ([`Shared::claim_random_id`]); released
/// when dropped.
#[derive(Debug)]
pub struct RandomIdClaim<'a> {
    shared: &'a Shared,
    random_id: i64,
}

impl Drop for RandomIdClaim<'_> {
    fn drop(&mut self) {
        let mut claimed = lock(&self.shared.claimed_ids);
        if let Some((_, _, n)) = claimed.get_mut(&self.random_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                claimed.remove(&self.random_id);
            }
        }
    }
}
