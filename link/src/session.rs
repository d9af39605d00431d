//! grammers' `Session` on the daemon's own store.
//!
//! The session is a [`SessionSnapshot`] (home DC, DC addresses and auth keys, the self user,
//! the update state) kept in memory and written through [`SessionStorage`] whenever grammers
//! changes it — except the update state, which must become durable in the same commit as the
//! updates it covers. The updates loop therefore *stages* it ([`LinkSession::stage`]): the state
//! grammers hands over in `sync_update_state` is kept apart, put by the caller into its batch
//! commit, and only then marked committed ([`LinkSession::committed`]). Every other write carries
//! the last *committed* update state, so no write can make qts durable before the messages.
//!
//! Guards: a replaced auth key (grammers silently generates a new one after a transport -404)
//! is refused with [`SessionError::AuthKeyReplaced`] — the account is logged out on that key;
//! a pinned address (a local server) is kept whatever `help.getConfig` answers; a stored pts of
//! 0 next to a real qts (which panics inside grammers) is read as pts 1.

use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddrV4, SocketAddrV6};
use std::sync::{Arc, Mutex, MutexGuard};

use grammers_session::types::{
    ChannelState, DcOption, PeerAuth, PeerId, PeerInfo, UpdateState, UpdatesState,
};
use grammers_session::{BoxFuture, Session};

/// Why the session refused or failed an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// grammers replaced the stored auth key of a DC (after an unknown-key error): the account
    /// is not logged in on the new key.
    AuthKeyReplaced {
        /// The DC.
        dc_id: i32,
    },
    /// The store failed.
    Storage(String),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::AuthKeyReplaced { dc_id } => write!(
                f,
                "the auth key of DC {dc_id} is unknown to Telegram: the account is logged out"
            ),
            SessionError::Storage(e) => write!(f, "session store: {e}"),
        }
    }
}

impl std::error::Error for SessionError {}

/// One DC's address and auth key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DcRecord {
    /// DC id.
    pub id: i32,
    /// IPv4 address.
    pub ipv4: SocketAddrV4,
    /// IPv6 address.
    pub ipv6: SocketAddrV6,
    /// The permanent auth key, once there is one.
    pub auth_key: Option<[u8; 256]>,
}

/// The persisted session: what the daemon needs to reconnect as the same account and continue
/// the update stream where it left off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionSnapshot {
    /// The account's home DC.
    pub home_dc: i32,
    /// Known DCs.
    pub dcs: Vec<DcRecord>,
    /// The logged-in user (id, access hash), once known.
    pub self_user: Option<(i64, i64)>,
    /// Whether every DC address is pinned (a local server): `help.getConfig` cannot move them.
    pub pinned: bool,
    /// The update state (pts, qts, date, seq) durable with the updates it covers.
    pub pts: i32,
    /// See `pts`.
    pub qts: i32,
    /// See `pts`.
    pub date: i32,
    /// See `pts`.
    pub seq: i32,
}

impl SessionSnapshot {
    /// A fresh session for Telegram's production DCs (grammers' built-in list), home DC 2.
    pub fn production() -> Self {
        let data = grammers_session::SessionData::default();
        let mut dcs: Vec<DcRecord> = data.dc_options.values().map(dc_record).collect();
        dcs.sort_by_key(|d| d.id);
        SessionSnapshot {
            home_dc: data.home_dc,
            dcs,
            ..Default::default()
        }
    }

    /// A fresh session for Telegram's test DCs (core.telegram.org/api/auth#test-accounts).
    pub fn test_servers() -> Self {
        let dc = |id, a, b, c, d| {
            let ipv4 = SocketAddrV4::new(std::net::Ipv4Addr::new(a, b, c, d), 443);
            DcRecord {
                id,
                ipv4,
                ipv6: SocketAddrV6::new(ipv4.ip().to_ipv6_mapped(), 443, 0, 0),
                auth_key: None,
            }
        };
        SessionSnapshot {
            home_dc: 2,
            dcs: vec![
                dc(1, 149, 154, 175, 10),
                dc(2, 149, 154, 167, 40),
                dc(3, 149, 154, 175, 117),
            ],
            ..Default::default()
        }
    }

    /// Every DC at one address with a provisioned auth key (a local server such as tgsim).
    pub fn pinned(addr: SocketAddrV4, auth_key: [u8; 256]) -> Self {
        let dcs = (1..=5)
            .map(|id| DcRecord {
                id,
                ipv4: addr,
                ipv6: SocketAddrV6::new(addr.ip().to_ipv6_mapped(), addr.port(), 0, 0),
                auth_key: Some(auth_key),
            })
            .collect();
        SessionSnapshot {
            home_dc: 2,
            dcs,
            pinned: true,
            ..Default::default()
        }
    }

    fn updates_state(&self) -> UpdatesState {
        // grammers panics on pts 0 with a real qts: a missing pts is read as 1.
        let pts = if self.pts == 0 && self.qts != 0 {
            1
        } else {
            self.pts
        };
        UpdatesState {
            pts,
            qts: self.qts,
            date: self.date,
            seq: self.seq,
            channels: Vec::new(),
        }
    }

    fn set_updates_state(&mut self, s: &UpdatesState) {
        (self.pts, self.qts, self.date, self.seq) = (s.pts, s.qts, s.date, s.seq);
    }
}

fn dc_record(d: &DcOption) -> DcRecord {
    DcRecord {
        id: d.id,
        ipv4: d.ipv4,
        ipv6: d.ipv6,
        auth_key: d.auth_key,
    }
}

fn dc_option(d: &DcRecord) -> DcOption {
    DcOption {
        id: d.id,
        ipv4: d.ipv4,
        ipv6: d.ipv6,
        auth_key: d.auth_key,
    }
}

/// Where the session is written (the daemon: its store, one durable commit per call).
pub trait SessionStorage: Send + Sync + 'static {
    /// Writes the snapshot durably.
    fn save(&self, snapshot: SessionSnapshot) -> BoxFuture<'_, Result<(), String>>;
}

struct Inner {
    /// What grammers sees.
    live: SessionSnapshot,
    /// The update state last made durable.
    committed: UpdatesState,
    /// While set, `set_update_state` goes to `staged` instead of the store.
    staging: bool,
    staged: Option<UpdatesState>,
    peers: HashMap<PeerId, PeerInfo>,
}

/// grammers' `Session` over [`SessionStorage`].
pub struct LinkSession {
    inner: Mutex<Inner>,
    storage: Arc<dyn SessionStorage>,
}

impl fmt::Debug for LinkSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkSession").finish_non_exhaustive()
    }
}

impl LinkSession {
    /// A session starting from a stored (or fresh) snapshot.
    pub fn new(snapshot: SessionSnapshot, storage: Arc<dyn SessionStorage>) -> Arc<LinkSession> {
        let committed = snapshot.updates_state();
        let mut peers = HashMap::new();
        if let Some((id, hash)) = snapshot.self_user {
            peers.insert(PeerId::user_unchecked(id), self_info(id, hash));
        }
        Arc::new(LinkSession {
            inner: Mutex::new(Inner {
                live: snapshot,
                committed,
                staging: false,
                staged: None,
                peers,
            }),
            storage,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The snapshot as it would be written now (with the committed update state).
    pub fn snapshot(&self) -> SessionSnapshot {
        let inner = self.lock();
        let mut s = inner.live.clone();
        s.set_updates_state(&inner.committed);
        s
    }

    /// The logged-in user, if known.
    pub fn self_user(&self) -> Option<i64> {
        self.lock().live.self_user.map(|(id, _)| id)
    }

    /// Starts staging: the next `set_update_state` from grammers is kept for the caller.
    pub fn stage(&self) {
        let mut inner = self.lock();
        inner.staging = true;
        inner.staged = None;
    }

    /// Ends staging; returns the snapshot to commit with the batch (with the staged update
    /// state, if grammers handed one over).
    pub fn take_staged(&self) -> Option<SessionSnapshot> {
        let mut inner = self.lock();
        inner.staging = false;
        let state = inner.staged.take()?;
        let mut s = inner.live.clone();
        s.set_updates_state(&state);
        Some(s)
    }

    /// Records that a staged snapshot is durable.
    pub fn committed(&self, snapshot: &SessionSnapshot) {
        self.lock().committed = snapshot.updates_state();
    }

    /// Caches the self user (for a provisioned key without a sign-in) and writes it.
    pub async fn set_self_user(&self, id: i64, access_hash: i64) -> Result<(), SessionError> {
        {
            let mut inner = self.lock();
            inner.live.self_user = Some((id, access_hash));
            inner
                .peers
                .insert(PeerId::user_unchecked(id), self_info(id, access_hash));
        }
        self.save().await
    }

    async fn save(&self) -> Result<(), SessionError> {
        let snapshot = self.snapshot();
        self.storage
            .save(snapshot)
            .await
            .map_err(SessionError::Storage)
    }

    fn apply_dc_option(&self, new: &DcOption) -> Result<(), SessionError> {
        let mut inner = self.lock();
        let pinned = inner.live.pinned;
        let dcs = &mut inner.live.dcs;
        match dcs.iter_mut().find(|d| d.id == new.id) {
            Some(old) => {
                if old.auth_key.is_some() && new.auth_key.is_some() && old.auth_key != new.auth_key
                {
                    tracing::error!(
                        dc = new.id,
                        "Telegram does not know our auth key: logged out"
                    );
                    return Err(SessionError::AuthKeyReplaced { dc_id: new.id });
                }
                if !pinned {
                    old.ipv4 = new.ipv4;
                    old.ipv6 = new.ipv6;
                }
                if new.auth_key.is_some() {
                    old.auth_key = new.auth_key;
                }
            }
            None => dcs.push(dc_record(new)),
        }
        Ok(())
    }
}

fn self_info(id: i64, access_hash: i64) -> PeerInfo {
    PeerInfo::User {
        id,
        auth: Some(PeerAuth::from_hash(access_hash)),
        bot: Some(false),
        is_self: Some(true),
    }
}

fn apply_update_state(s: &mut UpdatesState, update: UpdateState) {
    match update {
        UpdateState::All(all) => *s = all,
        UpdateState::Primary { pts, date, seq } => {
            (s.pts, s.date, s.seq) = (pts, date, seq);
        }
        UpdateState::Secondary { qts } => s.qts = qts,
        UpdateState::Channel { id, pts } => {
            s.channels.retain(|c| c.id != id);
            s.channels.push(ChannelState { id, pts });
        }
    }
}

impl Session for LinkSession {
    type Error = SessionError;

    fn home_dc_id(&self) -> Result<i32, SessionError> {
        Ok(self.lock().live.home_dc)
    }

    fn set_home_dc_id(&self, dc_id: i32) -> BoxFuture<'_, Result<(), SessionError>> {
        Box::pin(async move {
            self.lock().live.home_dc = dc_id;
            self.save().await
        })
    }

    fn dc_option(&self, dc_id: i32) -> Result<Option<DcOption>, SessionError> {
        Ok(self
            .lock()
            .live
            .dcs
            .iter()
            .find(|d| d.id == dc_id)
            .map(dc_option))
    }

    fn set_dc_option(&self, dc_option: &DcOption) -> BoxFuture<'_, Result<(), SessionError>> {
        let new = dc_option.clone();
        Box::pin(async move {
            let before = self.lock().live.dcs.clone();
            self.apply_dc_option(&new)?;
            if self.lock().live.dcs == before {
                return Ok(());
            }
            self.save().await
        })
    }

    fn peer(&self, peer: PeerId) -> BoxFuture<'_, Result<Option<PeerInfo>, SessionError>> {
        Box::pin(async move {
            let inner = self.lock();
            let id = if peer == PeerId::self_user() {
                match inner.live.self_user {
                    Some((id, _)) => PeerId::user_unchecked(id),
                    None => return Ok(None),
                }
            } else {
                peer
            };
            Ok(inner.peers.get(&id).cloned())
        })
    }

    fn cache_peer(&self, peer: PeerInfo) -> BoxFuture<'_, Result<(), SessionError>> {
        Box::pin(async move {
            let new_self = match &peer {
                PeerInfo::User {
                    id,
                    auth,
                    is_self: Some(true),
                    ..
                } => Some((*id, auth.map_or(0, |a| a.hash()))),
                _ => None,
            };
            {
                let mut inner = self.lock();
                inner
                    .peers
                    .entry(peer.id())
                    .or_insert_with(|| peer.clone())
                    .extend_info(&peer);
            }
            match new_self {
                Some((id, hash)) if self.lock().live.self_user != Some((id, hash)) => {
                    self.lock().live.self_user = Some((id, hash));
                    self.save().await
                }
                _ => Ok(()),
            }
        })
    }

    fn updates_state(&self) -> BoxFuture<'_, Result<UpdatesState, SessionError>> {
        Box::pin(async move { Ok(self.lock().committed.clone()) })
    }

    fn set_update_state(&self, update: UpdateState) -> BoxFuture<'_, Result<(), SessionError>> {
        Box::pin(async move {
            {
                let mut inner = self.lock();
                if inner.staging {
                    let mut s = inner
                        .staged
                        .take()
                        .unwrap_or_else(|| inner.committed.clone());
                    apply_update_state(&mut s, update);
                    inner.staged = Some(s);
                    return Ok(());
                }
                let mut s = inner.committed.clone();
                apply_update_state(&mut s, update);
                inner.live.set_updates_state(&s);
                inner.committed = s;
            }
            // Outside staging (login, a fresh getState): nothing to lose, written at once.
            self.save().await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Memory {
        saved: Mutex<Vec<SessionSnapshot>>,
        writes: AtomicUsize,
    }

    impl SessionStorage for Memory {
        fn save(&self, s: SessionSnapshot) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(async move {
                self.writes.fetch_add(1, Ordering::SeqCst);
                self.saved.lock().map_err(|e| e.to_string())?.push(s);
                Ok(())
            })
        }
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn pinned() -> (Arc<Memory>, Arc<LinkSession>) {
        let m = Arc::new(Memory::default());
        let addr: SocketAddrV4 = "127.0.0.1:4430".parse().expect("addr");
        let s = LinkSession::new(SessionSnapshot::pinned(addr, [7; 256]), m.clone());
        (m, s)
    }

    #[test]
    fn a_replaced_auth_key_is_refused_and_a_pinned_address_kept() {
        let (m, s) = pinned();
        let mut moved = s.dc_option(2).expect("ok").expect("dc 2");
        moved.ipv4 = "10.0.0.1:443".parse().expect("addr");
        block(s.set_dc_option(&moved)).expect("same key: accepted");
        assert_eq!(
            s.dc_option(2).expect("ok").map(|d| d.ipv4.to_string()),
            Some("127.0.0.1:4430".into()),
            "pinned"
        );
        assert_eq!(
            m.writes.load(Ordering::SeqCst),
            0,
            "nothing changed, nothing written"
        );
        let mut replaced = moved;
        replaced.auth_key = Some([8; 256]);
        assert_eq!(
            block(s.set_dc_option(&replaced)),
            Err(SessionError::AuthKeyReplaced { dc_id: 2 })
        );
        assert_eq!(
            s.dc_option(2).expect("ok").and_then(|d| d.auth_key),
            Some([7; 256])
        );
    }

    #[test]
    fn a_staged_update_state_is_never_written_by_another_path() {
        let (m, s) = pinned();
        block(s.set_update_state(UpdateState::All(UpdatesState {
            pts: 1,
            qts: 5,
            ..Default::default()
        })))
        .expect("login state");
        s.stage();
        block(s.set_update_state(UpdateState::Secondary { qts: 9 })).expect("staged");
        // A concurrent write (the self user) carries the committed qts, not the staged one.
        block(s.set_self_user(1001, 42)).expect("self");
        let last = m
            .saved
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("written");
        assert_eq!((last.qts, last.self_user), (5, Some((1001, 42))));
        let staged = s.take_staged().expect("staged snapshot");
        assert_eq!(staged.qts, 9);
        assert_eq!(
            block(s.updates_state()).expect("ok").qts,
            5,
            "not yet committed"
        );
        s.committed(&staged);
        assert_eq!(block(s.updates_state()).expect("ok").qts, 9);
    }

    #[test]
    fn a_stored_pts_of_zero_beside_a_qts_is_read_as_one() {
        let mut snap = SessionSnapshot::production();
        snap.qts = 12;
        let s = LinkSession::new(snap, Arc::new(Memory::default()));
        let st = block(s.updates_state()).expect("ok");
        assert_eq!((st.pts, st.qts), (1, 12));
    }

    #[test]
    fn the_self_user_answers_for_self() {
        let (_, s) = pinned();
        assert_eq!(block(s.peer(PeerId::self_user())).expect("ok"), None);
        block(s.set_self_user(1001, 42)).expect("self");
        assert!(matches!(
            block(s.peer(PeerId::self_user())).expect("ok"),
            Some(PeerInfo::User { id: 1001, .. })
        ));
    }
}
