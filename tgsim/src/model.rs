//! The Telegram model: what the server does for secret chats, sans IO.
//!
//! A [`World`] holds accounts, blocked pairs, secret chats, each account's queue of encrypted
//! messages (numbered by the account's **qts**) and of chat updates (numbered by the account's
//! **pts**, see below), the first answer to each (sender, random_id), and a log of every
//! delivery of an encrypted message. A
//! [`Model`] wraps it in a `Mutex`, answers API calls ([`ApiHandler`]) and pushes updates through
//! an [`UpdateSink`].
//!
//! ## Semantics (digest §6, §7, §9)
//!
//! - `auth.sendCode` for the phone of a known account answers `auth.sentCode` (type app, 5 digits)
//!   with the fixed [`PHONE_CODE_HASH`]; `auth.signIn` with code [`PHONE_CODE`] answers
//!   `auth.authorization`. The auth key is provisioned for one account by the session layer, so
//!   signing in with another account's phone is `PHONE_NUMBER_INVALID`.
//! - **Two-step password** ([`login`]): an account with a password (admin `set_password`; the
//!   server keeps the salts and the SRP verifier, never the password) answers a right code with
//!   `401 SESSION_PASSWORD_NEEDED`; `account.getPassword` answers `account.password` with
//!   `passwordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow` (Telegram's DH prime,
//!   g = 3), `srp_B`, a fresh `srp_id` and the hint, and `auth.checkPassword` checks the SRP
//!   proof (`PASSWORD_HASH_INVALID`, `SRP_ID_INVALID`, `SRP_A_INVALID`; `PASSWORD_EMPTY`
//!   without a password). Checked against grammers' client side in the tests.
//! - **`auth.logOut`** signs the device out and, as Telegram does with a device's
//!   authorization, discards every secret chat of the account (the peers get
//!   `encryptedChatDiscarded`). Until it signs in again (code, then password if any), its
//!   key gets `401 AUTH_KEY_UNREGISTERED` for every call but `auth.sendCode`, `auth.signIn`,
//!   `auth.checkPassword` and `account.getPassword`, and no pushed updates. A provisioned key
//!   starts signed in. [`Model::log_out`] does the same from outside (the user terminating the
//!   session from another device).
//! - `messages.requestEncryption(user, random_id, g_a)`: the chat id **is** `random_id` (TDLib
//!   relies on it). A repeat of the same request (same creator, peer and g_a) answers the same
//!   `encryptedChatWaiting`; any other use of a taken id is `RANDOM_ID_DUPLICATE` (the digest
//!   names no error for it), 0 is `RANDOM_ID_INVALID`.
//! - `messages.acceptEncryption` by the participant of a waiting chat stores g_b and the
//!   fingerprint and queues `updateEncryption(encryptedChat)` for **both** sides: the creator
//!   (`g_a_or_b` = g_b) and the acceptor itself (`g_a_or_b` = g_a, the same object as its answer),
//!   so an acceptor whose answer was lost still learns of its acceptance, pushed or through
//!   getDifference (TDLib's acceptor becomes ready from whichever comes first, the answer or the
//!   update). Telegram's docs say the acceptor's *other* devices get `encryptedChatDiscarded`;
//!   tgsim has one device per account. Accepting again: `ENCRYPTION_ALREADY_ACCEPTED`; accepting
//!   a discarded chat: `ENCRYPTION_ALREADY_DECLINED` (both 400, as the docs list them).
//! - Sends are validated in this order: chat (`CHAT_ID_INVALID`: unknown, not the caller's, or a
//!   wrong access_hash), state (`ENCRYPTION_DECLINED`: not accepted yet, or discarded), block
//!   (`USER_IS_BLOCKED` 403 when the recipient blocked the sender, `YOU_BLOCKED_USER` 400 when the
//!   sender blocked the recipient), data (`DATA_INVALID`: shorter than 24 bytes or not 24 + 16k;
//!   `DATA_TOO_LONG` above 1 MiB), then the random_id.
//! - **A repeated (sender, random_id) is relayed again.** Clients send a message again with the
//!   same random_id and the same bytes when an answer was lost, and to answer the peer's Resend
//!   (TDLib and secret-core resend the stored query unchanged; TDLib treats any error but 429 as
//!   fatal). So a repeat is delivered like a new message: the recipient's next qts, a new queue
//!   entry with the date of this delivery, a new entry in the relay log; the receiver's seq check
//!   drops a true duplicate. The answer is idempotent: the date of the first send. The bytes are
//!   not compared with the first send's (what Telegram does with other bytes under a used
//!   random_id is not documented); the relay log lets tests check that a client repeats the same
//!   bytes. The same random_id from the same sender in another chat is `400 RANDOM_ID_DUPLICATE`
//!   (tgsim's choice; the docs name no error).
//! - **The key fingerprint in `data` is not checked.** The server never learns keys after a
//!   re-key (PFS), so it cannot tell a valid new fingerprint from garbage; Telegram relays the
//!   bytes, and so do we. Receivers drop what they cannot decrypt.
//! - Updates are pushed as `updates{updates:[u], users, chats:[], date, seq:0}` (seq 0: no seq
//!   ordering), except `updateEncryptedChatTyping`, which goes as `updateShort` like Telegram's.
//! - qts: an account starts at qts [`FIRST_QTS`] (TDLib treats qts <= 1 as invalid, so the first
//!   message has qts 2). Every encrypted message takes the recipient's next qts and stays queued
//!   until acknowledged by `messages.receivedQueue(max_qts)` or by the qts passed to
//!   `updates.getDifference`; queued messages older than 7 days are dropped.
//! - `updateEncryption` events are queued too, so a device that was offline still learns about a
//!   request or an acceptance: they are numbered with the account's **pts** (tgsim has no other
//!   pts events) and returned in `updates.getDifference.other_updates` while above the passed pts
//!   (the passed pts acknowledges them). Telegram's real mechanism (seq/date) differs; clients
//!   that call getDifference with the pts from getState see the same result.
//! - Unknown methods: `400 METHOD_NOT_IMPLEMENTED` (Telegram would answer e.g.
//!   `400 INPUT_METHOD_INVALID`; a clear name helps debugging); undecodable arguments:
//!   `400 INPUT_FETCH_FAIL`; a caller whose account does not exist: `401 AUTH_KEY_UNREGISTERED`.
//! - `ctx.layer` is ignored: objects are always serialized in grammers' layer (230).
//!
//! ## Persistence
//!
//! With a state path, every call that changes the world is applied to a copy, the copy is written
//! atomically (temp file, fsync, rename, fsync of the directory) and only then does it replace
//! the live world, its updates get pushed and its answer is returned. A `kill -9` at any point
//! loses nothing that was answered. If writing fails, the call answers `500
//! INTERNAL_SERVER_ERROR` and the world is unchanged. Cost: a clone plus a full rewrite of the
//! world (including the relay log) per mutating call, O(world size); fine for a test server.
//!
//! The file is `STATE_MAGIC (8) | STATE_VERSION u32 LE | crc32(body) u32 LE | body`, the body
//! being the [`World`] in postcard. Version 1 (before [`World::logins`]) is still read.

pub mod login;
mod objects;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use grammers_tl_types::{Deserializable, Identifiable, Serializable, enums, functions, types};
use secret_core::dh::{self, DhConfig, TELEGRAM_DH_PRIME};
use secret_core::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::api::{ApiHandler, CallContext, RpcError, UpdateSink};
use crate::session::AccountId;

/// The login code every test account accepts.
pub const PHONE_CODE: &str = "22222";
/// The `phone_code_hash` of every `auth.sentCode`.
pub const PHONE_CODE_HASH: &str = "7467736d2d636f6465";
/// The generator of `messages.dhConfig`.
pub const DH_G: i32 = 3;
/// The version of `messages.dhConfig`.
pub const DH_VERSION: i32 = 1;
/// Bytes of `random` in `messages.dhConfig` (always, as TDLib observes).
pub const DH_RANDOM_LEN: usize = 256;
/// Largest accepted `random_length`.
pub const MAX_RANDOM_LENGTH: i32 = 1024;
/// qts of a new account (the first message gets `FIRST_QTS + 1`).
pub const FIRST_QTS: i32 = 1;
/// pts of a new account.
pub const FIRST_PTS: i32 = 1;
/// Queued messages older than this are dropped (digest §7).
pub const QUEUE_TTL_SECS: i32 = 7 * 24 * 3600;
/// Largest `data` accepted by the send methods.
pub const MAX_DATA_LEN: usize = secret_core::crypto::MAX_MESSAGE_DATA;
/// First bytes of a state file.
pub const STATE_MAGIC: [u8; 8] = *b"TGSIMWLD";
/// Version of the state file format.
pub const STATE_VERSION: u32 = 2;

/// An account (one user with one device).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The user id (also the [`AccountId`]).
    pub user_id: i64,
    /// Phone number, digits only.
    pub phone: String,
    /// First name.
    pub first_name: String,
    /// The user's access_hash (not checked on input).
    pub access_hash: i64,
    /// Last qts assigned.
    pub qts: i32,
    /// Last pts assigned (chat updates).
    pub pts: i32,
    /// Unacknowledged encrypted messages, by qts.
    pub queue: BTreeMap<i32, QueuedMessage>,
    /// Unacknowledged `updateEncryption` events, by pts.
    pub chat_events: BTreeMap<i32, ChatEvent>,
}

/// A queued `updateNewEncryptedMessage`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// The recipient's qts of this message.
    pub qts: i32,
    /// The chat.
    pub chat_id: i32,
    /// The sender's random_id.
    pub random_id: i64,
    /// Server date.
    pub date: i32,
    /// The `data` as sent.
    pub data: Vec<u8>,
    /// True for `encryptedMessageService` (sendEncryptedService).
    pub service: bool,
}

/// A queued `updateEncryption`: the chat as it was at `pts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatEvent {
    /// The account's pts of this event.
    pub pts: i32,
    /// The chat.
    pub chat_id: i32,
    /// The chat's status then.
    pub status: ChatStatus,
    /// Date of the update.
    pub date: i32,
}

/// Server-side status of a secret chat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatStatus {
    /// Requested, not accepted yet.
    Waiting,
    /// Accepted.
    Accepted,
    /// Discarded (declined, cancelled or closed).
    Discarded {
        /// Whether the discarding side asked to delete history.
        history_deleted: bool,
    },
}

/// A secret chat as the server knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretChat {
    /// Chat id (the creator's random_id).
    pub id: i32,
    /// access_hash.
    pub access_hash: i64,
    /// Creation date.
    pub date: i32,
    /// The creator.
    pub admin_id: i64,
    /// The other user.
    pub participant_id: i64,
    /// The creator's g_a.
    pub g_a: Vec<u8>,
    /// The participant's g_b (empty until accepted).
    pub g_b: Vec<u8>,
    /// The fingerprint the participant sent (0 until accepted).
    pub key_fingerprint: i64,
    /// Status.
    pub status: ChatStatus,
}

impl SecretChat {
    fn peer_of(&self, user: i64) -> i64 {
        if user == self.admin_id {
            self.participant_id
        } else {
            self.admin_id
        }
    }
}

/// The first answer to a (sender, random_id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentRecord {
    /// The chat it went to.
    pub chat_id: i32,
    /// The date answered.
    pub date: i32,
}

/// One delivery of an encrypted message (for test inspection). A repeated (sender, random_id) is
/// relayed again, so it appears once per delivery, each time with its own qts and date.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relayed {
    /// Who sent it.
    pub sender: AccountId,
    /// Who gets it.
    pub recipient: AccountId,
    /// The chat.
    pub chat_id: i32,
    /// The sender's random_id.
    pub random_id: i64,
    /// Server date of this delivery (the sender's answer to a repeat carries the first date).
    pub date: i32,
    /// The recipient's qts.
    pub qts: i32,
    /// sendEncryptedService (true) or sendEncrypted (false).
    pub service: bool,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Everything the server knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct World {
    /// Accounts by user id.
    pub accounts: BTreeMap<AccountId, Account>,
    /// (blocker, blocked).
    pub blocked: BTreeSet<(AccountId, AccountId)>,
    /// Secret chats by id.
    pub chats: BTreeMap<i32, SecretChat>,
    /// First answers by (sender, random_id): a repeat is answered with this date.
    pub sent: BTreeMap<(AccountId, i64), SentRecord>,
    /// Every message relayed, in order (a repeated random_id once per delivery).
    pub relayed: Vec<Relayed>,
    /// Login state by account (two-step password, logged out); missing: signed in, no
    /// password. Added in state file version 2.
    pub logins: BTreeMap<AccountId, login::Login>,
}

/// A world as state file version 1 stored it (before [`World::logins`]).
#[derive(Deserialize)]
struct WorldV1 {
    accounts: BTreeMap<AccountId, Account>,
    blocked: BTreeSet<(AccountId, AccountId)>,
    chats: BTreeMap<i32, SecretChat>,
    sent: BTreeMap<(AccountId, i64), SentRecord>,
    relayed: Vec<Relayed>,
}

impl From<WorldV1> for World {
    fn from(w: WorldV1) -> World {
        World {
            accounts: w.accounts,
            blocked: w.blocked,
            chats: w.chats,
            sent: w.sent,
            relayed: w.relayed,
            logins: BTreeMap::new(),
        }
    }
}

/// What a call does besides answering.
#[derive(Default)]
struct Effects {
    mutated: bool,
    pushes: Vec<(AccountId, Vec<u8>)>,
}

fn err(code: i32, name: &str) -> RpcError {
    RpcError::new(code, name)
}

fn bad(name: &str) -> RpcError {
    err(400, name)
}

fn date_of(ctx: &CallContext) -> i32 {
    (ctx.now_ms / 1000).min(i32::MAX as u64) as i32
}

fn decode<T: Deserializable>(query: &[u8]) -> Result<T, RpcError> {
    let body = query.get(4..).ok_or_else(|| bad("INPUT_FETCH_FAIL"))?;
    T::from_bytes(body).map_err(|_| bad("INPUT_FETCH_FAIL"))
}

fn digits(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

fn updates_of(update: enums::Update, users: Vec<enums::User>, date: i32) -> Vec<u8> {
    enums::Updates::Updates(types::Updates {
        updates: vec![update],
        users,
        chats: Vec::new(),
        date,
        seq: 0,
    })
    .to_bytes()
}

fn encrypted_message(m: &QueuedMessage) -> enums::EncryptedMessage {
    if m.service {
        enums::EncryptedMessage::Service(types::EncryptedMessageService {
            random_id: m.random_id,
            chat_id: m.chat_id,
            date: m.date,
            bytes: m.data.clone(),
        })
    } else {
        enums::EncryptedMessage::Message(types::EncryptedMessage {
            random_id: m.random_id,
            chat_id: m.chat_id,
            date: m.date,
            bytes: m.data.clone(),
            file: enums::EncryptedFile::Empty,
        })
    }
}

/// The calls a logged-out account may make.
const LOGIN_CALLS: [u32; 4] = [
    functions::auth::SendCode::CONSTRUCTOR_ID,
    functions::auth::SignIn::CONSTRUCTOR_ID,
    functions::auth::CheckPassword::CONSTRUCTOR_ID,
    functions::account::GetPassword::CONSTRUCTOR_ID,
];

/// `auth.authorization` for the account signing in.
fn authorization(acc: &Account) -> Vec<u8> {
    enums::auth::Authorization::Authorization(types::auth::Authorization {
        setup_password_required: false,
        otherwise_relogin_days: None,
        tmp_sessions: None,
        future_auth_token: None,
        user: objects::user(acc, true),
    })
    .to_bytes()
}

/// Constructor ids of the calls that can change the world (the others never persist).
const MUTATING: [u32; 11] = [
    functions::auth::SignIn::CONSTRUCTOR_ID,
    functions::auth::CheckPassword::CONSTRUCTOR_ID,
    functions::auth::LogOut::CONSTRUCTOR_ID,
    functions::account::GetPassword::CONSTRUCTOR_ID,
    functions::messages::RequestEncryption::CONSTRUCTOR_ID,
    functions::messages::AcceptEncryption::CONSTRUCTOR_ID,
    functions::messages::DiscardEncryption::CONSTRUCTOR_ID,
    functions::messages::SendEncrypted::CONSTRUCTOR_ID,
    functions::messages::SendEncryptedService::CONSTRUCTOR_ID,
    functions::messages::ReceivedQueue::CONSTRUCTOR_ID,
    functions::updates::GetDifference::CONSTRUCTOR_ID,
];

impl World {
    /// Adds an account. Fails if the id or the phone is taken.
    pub fn add_account(
        &mut self,
        user_id: i64,
        phone: &str,
        first_name: &str,
    ) -> Result<AccountId, String> {
        let phone = digits(phone);
        if user_id <= 0 {
            return Err(format!("bad user id {user_id}"));
        }
        if self.accounts.contains_key(&user_id) {
            return Err(format!("user {user_id} exists"));
        }
        if self.accounts.values().any(|a| a.phone == phone) {
            return Err(format!("phone {phone} is taken"));
        }
        self.accounts.insert(
            user_id,
            Account {
                user_id,
                phone,
                first_name: first_name.to_owned(),
                access_hash: user_id.wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64) ^ 0x7467_736d,
                qts: FIRST_QTS,
                pts: FIRST_PTS,
                queue: BTreeMap::new(),
                chat_events: BTreeMap::new(),
            },
        );
        Ok(user_id)
    }

    /// True if `a` blocked `b`.
    pub fn is_blocked(&self, a: AccountId, b: AccountId) -> bool {
        self.blocked.contains(&(a, b))
    }

    fn account(&self, id: AccountId) -> Result<&Account, RpcError> {
        self.accounts
            .get(&id)
            .ok_or_else(|| err(401, "AUTH_KEY_UNREGISTERED"))
    }

    fn account_mut(&mut self, id: AccountId) -> Result<&mut Account, RpcError> {
        self.accounts
            .get_mut(&id)
            .ok_or_else(|| err(401, "AUTH_KEY_UNREGISTERED"))
    }

    fn user_obj(&self, id: AccountId, viewer: AccountId) -> Option<enums::User> {
        self.accounts
            .get(&id)
            .map(|a| objects::user(a, id == viewer))
    }

    fn resolve_user(&self, caller: AccountId, u: &enums::InputUser) -> Option<AccountId> {
        let id = match u {
            enums::InputUser::UserSelf => caller,
            enums::InputUser::User(u) => u.user_id,
            enums::InputUser::FromMessage(u) => u.user_id,
            enums::InputUser::Empty => return None,
        };
        self.accounts.contains_key(&id).then_some(id)
    }

    /// The chat behind `peer` if the caller is in it and the access_hash matches.
    fn resolve_chat(
        &self,
        caller: AccountId,
        peer: &enums::InputEncryptedChat,
    ) -> Result<&SecretChat, RpcError> {
        let enums::InputEncryptedChat::Chat(p) = peer;
        match self.chats.get(&p.chat_id) {
            Some(c)
                if c.access_hash == p.access_hash
                    && (c.admin_id == caller || c.participant_id == caller) =>
            {
                Ok(c)
            }
            _ => Err(bad("CHAT_ID_INVALID")),
        }
    }

    /// Whether `account` logged out and has not signed in again.
    pub fn signed_out(&self, account: AccountId) -> bool {
        self.logins.get(&account).is_some_and(|l| l.signed_out)
    }

    /// Sets (or with `None` removes) an account's two-step password.
    pub fn set_password(
        &mut self,
        account: AccountId,
        password: Option<login::Password>,
    ) -> Result<(), String> {
        if !self.accounts.contains_key(&account) {
            return Err(format!("no account {account}"));
        }
        let login = self.logins.entry(account).or_default();
        login.password = password;
        login.srp = None;
        login.code_accepted = false;
        Ok(())
    }

    /// `account.getPassword`: the password's algorithm and a new SRP round, or "no password".
    fn get_password(
        &mut self,
        me: AccountId,
        env: &mut Env<'_>,
        fx: &mut Effects,
    ) -> Result<Vec<u8>, RpcError> {
        let mut secure_random = vec![0u8; 256];
        env.rng.fill(&mut secure_random);
        let mut new_salt1 = vec![0u8; 32];
        let mut new_salt2 = vec![0u8; 16];
        env.rng.fill(&mut new_salt1);
        env.rng.fill(&mut new_salt2);
        let algo = |salt1: &[u8], salt2: &[u8]| {
            enums::PasswordKdfAlgo::Sha256Sha256Pbkdf2Hmacsha512iter100000Sha256ModPow(
                types::PasswordKdfAlgoSha256Sha256Pbkdf2Hmacsha512iter100000Sha256ModPow {
                    salt1: salt1.to_vec(),
                    salt2: salt2.to_vec(),
                    g: login::SRP_G,
                    p: TELEGRAM_DH_PRIME.to_vec(),
                },
            )
        };
        let login = self.logins.entry(me).or_default();
        let current = login.password.as_ref().map(|pw| {
            let round = pw.start(env.rng);
            let answer = (
                algo(&pw.salt1, &pw.salt2),
                round.big_b.clone(),
                round.id,
                pw.hint.clone(),
            );
            login.srp = Some(round);
            answer
        });
        fx.mutated |= current.is_some();
        let (current_algo, srp_b, srp_id, hint) = match current {
            Some((a, b, id, hint)) => (Some(a), Some(b), Some(id), Some(hint)),
            None => (None, None, None, None),
        };
        Ok(
            enums::account::Password::Password(types::account::Password {
                has_recovery: false,
                has_secure_values: false,
                has_password: current_algo.is_some(),
                current_algo,
                srp_b,
                srp_id,
                hint: hint.filter(|h| !h.is_empty()),
                email_unconfirmed_pattern: None,
                new_algo: algo(&new_salt1, &new_salt2),
                new_secure_algo: enums::SecurePasswordKdfAlgo::Unknown,
                secure_random,
                pending_reset_date: None,
                login_email_pattern: None,
            })
            .to_bytes(),
        )
    }

    /// `auth.logOut`: the device is signed out and, as Telegram does, every secret chat of
    /// the account is discarded (the peers get `encryptedChatDiscarded`).
    fn log_out(&mut self, me: AccountId, now: i32, fx: &mut Effects) {
        let login = self.logins.entry(me).or_default();
        login.signed_out = true;
        login.code_accepted = false;
        login.srp = None;
        fx.mutated = true;
        let open: Vec<(i32, AccountId)> = self
            .chats
            .iter_mut()
            .filter(|(_, c)| c.admin_id == me || c.participant_id == me)
            .filter(|(_, c)| !matches!(c.status, ChatStatus::Discarded { .. }))
            .map(|(&id, c)| {
                c.status = ChatStatus::Discarded {
                    history_deleted: false,
                };
                let peer = if c.admin_id == me {
                    c.participant_id
                } else {
                    c.admin_id
                };
                (id, peer)
            })
            .collect();
        for (chat_id, peer) in open {
            self.chat_update(peer, chat_id, now, fx);
        }
    }

    /// Queues `updateEncryption` for `to` with the chat as it is now, and pushes it.
    fn chat_update(&mut self, to: AccountId, chat_id: i32, date: i32, fx: &mut Effects) {
        let Some(chat) = self.chats.get(&chat_id).cloned() else {
            return;
        };
        let Some(acc) = self.accounts.get_mut(&to) else {
            return;
        };
        acc.pts += 1;
        let pts = acc.pts;
        acc.chat_events.insert(
            pts,
            ChatEvent {
                pts,
                chat_id,
                status: chat.status.clone(),
                date,
            },
        );
        fx.mutated = true;
        let update = enums::Update::Encryption(types::UpdateEncryption {
            chat: objects::encrypted_chat(&chat, to),
            date,
        });
        let users = [chat.admin_id, chat.participant_id]
            .iter()
            .filter_map(|&u| self.user_obj(u, to))
            .collect();
        fx.pushes.push((to, updates_of(update, users, date)));
    }

    fn call(
        &mut self,
        ctx: &CallContext,
        constructor: u32,
        query: &[u8],
        env: &mut Env<'_>,
        fx: &mut Effects,
    ) -> Result<Vec<u8>, RpcError> {
        use functions::{account, auth, messages, updates, users};
        let me = ctx.account;
        let now = date_of(ctx);
        if self.signed_out(me) && !LOGIN_CALLS.contains(&constructor) {
            return Err(err(401, "AUTH_KEY_UNREGISTERED"));
        }
        match constructor {
            auth::SendCode::CONSTRUCTOR_ID => {
                let f: auth::SendCode = decode(query)?;
                let phone = digits(&f.phone_number);
                if !self.accounts.values().any(|a| a.phone == phone) {
                    return Err(bad("PHONE_NUMBER_INVALID"));
                }
                Ok(enums::auth::SentCode::Code(types::auth::SentCode {
                    r#type: enums::auth::SentCodeType::App(types::auth::SentCodeTypeApp {
                        length: PHONE_CODE.len() as i32,
                    }),
                    phone_code_hash: PHONE_CODE_HASH.to_owned(),
                    next_type: None,
                    timeout: None,
                })
                .to_bytes())
            }
            auth::SignIn::CONSTRUCTOR_ID => {
                let f: auth::SignIn = decode(query)?;
                let phone = digits(&f.phone_number);
                let acc = self.account(me)?;
                if acc.phone != phone {
                    return Err(bad("PHONE_NUMBER_INVALID"));
                }
                if f.phone_code_hash != PHONE_CODE_HASH {
                    return Err(bad("PHONE_CODE_EXPIRED"));
                }
                match f.phone_code.as_deref() {
                    None | Some("") => return Err(bad("PHONE_CODE_EMPTY")),
                    Some(PHONE_CODE) => {}
                    Some(_) => return Err(bad("PHONE_CODE_INVALID")),
                }
                let answer = authorization(acc);
                let login = self.logins.entry(me).or_default();
                fx.mutated = true;
                if login.password.is_some() {
                    login.code_accepted = true;
                    return Err(err(401, "SESSION_PASSWORD_NEEDED"));
                }
                login.signed_out = false;
                Ok(answer)
            }
            account::GetPassword::CONSTRUCTOR_ID => {
                let _: account::GetPassword = decode(query)?;
                self.account(me)?;
                self.get_password(me, env, fx)
            }
            auth::CheckPassword::CONSTRUCTOR_ID => {
                let f: auth::CheckPassword = decode(query)?;
                let answer = authorization(self.account(me)?);
                let login = self.logins.entry(me).or_default();
                let Some(pw) = &login.password else {
                    return Err(bad("PASSWORD_EMPTY"));
                };
                if login.signed_out && !login.code_accepted {
                    return Err(err(401, "AUTH_KEY_UNREGISTERED"));
                }
                let enums::InputCheckPasswordSrp::Srp(srp) = f.password else {
                    return Err(bad("PASSWORD_HASH_INVALID"));
                };
                pw.check(login.srp.as_ref(), srp.srp_id, &srp.a, &srp.m1)
                    .map_err(|e| bad(login::srp_error(e)))?;
                login.signed_out = false;
                login.code_accepted = false;
                login.srp = None;
                fx.mutated = true;
                Ok(answer)
            }
            auth::LogOut::CONSTRUCTOR_ID => {
                let _: auth::LogOut = decode(query)?;
                self.account(me)?;
                self.log_out(me, now, fx);
                Ok(enums::auth::LoggedOut::Out(types::auth::LoggedOut {
                    future_auth_token: None,
                })
                .to_bytes())
            }
            users::GetUsers::CONSTRUCTOR_ID => {
                let f: users::GetUsers = decode(query)?;
                self.account(me)?;
                let list: Vec<enums::User> =
                    f.id.iter()
                        .filter(|u| !matches!(u, enums::InputUser::Empty))
                        .map(|u| {
                            self.resolve_user(me, u)
                                .and_then(|id| self.user_obj(id, me))
                                .unwrap_or_else(|| {
                                    let id = match u {
                                        enums::InputUser::User(u) => u.user_id,
                                        enums::InputUser::FromMessage(u) => u.user_id,
                                        _ => 0,
                                    };
                                    enums::User::Empty(types::UserEmpty { id })
                                })
                        })
                        .collect();
                Ok(list.to_bytes())
            }
            users::GetFullUser::CONSTRUCTOR_ID => {
                let f: users::GetFullUser = decode(query)?;
                self.account(me)?;
                let id = self
                    .resolve_user(me, &f.id)
                    .ok_or_else(|| bad("USER_ID_INVALID"))?;
                let user = self.user_obj(id, me).into_iter().collect();
                Ok(enums::users::UserFull::Full(types::users::UserFull {
                    full_user: objects::user_full(id, self.is_blocked(me, id)),
                    chats: Vec::new(),
                    users: user,
                })
                .to_bytes())
            }
            updates::GetState::CONSTRUCTOR_ID => {
                let acc = self.account(me)?;
                Ok(enums::updates::State::State(types::updates::State {
                    pts: acc.pts,
                    qts: acc.qts,
                    date: now,
                    seq: 0,
                    unread_count: 0,
                })
                .to_bytes())
            }
            updates::GetDifference::CONSTRUCTOR_ID => {
                let f: updates::GetDifference = decode(query)?;
                self.get_difference(me, &f, now, fx)
            }
            messages::GetDhConfig::CONSTRUCTOR_ID => {
                let f: messages::GetDhConfig = decode(query)?;
                if !(0..=MAX_RANDOM_LENGTH).contains(&f.random_length) {
                    return Err(bad("RANDOM_LENGTH_INVALID"));
                }
                let mut random = vec![0u8; DH_RANDOM_LEN];
                env.rng.fill(&mut random);
                let answer = if f.version == DH_VERSION {
                    enums::messages::DhConfig::NotModified(types::messages::DhConfigNotModified {
                        random,
                    })
                } else {
                    enums::messages::DhConfig::Config(types::messages::DhConfig {
                        g: DH_G,
                        p: TELEGRAM_DH_PRIME.to_vec(),
                        version: DH_VERSION,
                        random,
                    })
                };
                Ok(answer.to_bytes())
            }
            messages::RequestEncryption::CONSTRUCTOR_ID => {
                let f: messages::RequestEncryption = decode(query)?;
                self.request_encryption(me, f, now, env, fx)
            }
            messages::AcceptEncryption::CONSTRUCTOR_ID => {
                let f: messages::AcceptEncryption = decode(query)?;
                self.accept_encryption(me, f, now, env, fx)
            }
            messages::DiscardEncryption::CONSTRUCTOR_ID => {
                let f: messages::DiscardEncryption = decode(query)?;
                self.account(me)?;
                if f.chat_id == 0 {
                    return Err(bad("CHAT_ID_EMPTY"));
                }
                let chat = match self.chats.get_mut(&f.chat_id) {
                    Some(c) if c.admin_id == me || c.participant_id == me => c,
                    _ => return Err(bad("ENCRYPTION_ID_INVALID")),
                };
                if matches!(chat.status, ChatStatus::Discarded { .. }) {
                    return Err(bad("ENCRYPTION_ALREADY_DECLINED"));
                }
                chat.status = ChatStatus::Discarded {
                    history_deleted: f.delete_history,
                };
                let (a, b) = (chat.admin_id, chat.participant_id);
                fx.mutated = true;
                self.chat_update(a, f.chat_id, now, fx);
                self.chat_update(b, f.chat_id, now, fx);
                Ok(true.to_bytes())
            }
            messages::SendEncrypted::CONSTRUCTOR_ID => {
                let f: messages::SendEncrypted = decode(query)?;
                self.send(me, &f.peer, f.random_id, f.data, false, now, fx)
            }
            messages::SendEncryptedService::CONSTRUCTOR_ID => {
                let f: messages::SendEncryptedService = decode(query)?;
                self.send(me, &f.peer, f.random_id, f.data, true, now, fx)
            }
            messages::ReadEncryptedHistory::CONSTRUCTOR_ID => {
                let f: messages::ReadEncryptedHistory = decode(query)?;
                self.account(me)?;
                let chat = self.resolve_chat(me, &f.peer)?;
                if chat.status != ChatStatus::Accepted {
                    return Err(bad("ENCRYPTION_DECLINED"));
                }
                let peer = chat.peer_of(me);
                let update =
                    enums::Update::EncryptedMessagesRead(types::UpdateEncryptedMessagesRead {
                        chat_id: chat.id,
                        max_date: f.max_date,
                        date: now,
                    });
                fx.pushes.push((peer, updates_of(update, Vec::new(), now)));
                Ok(true.to_bytes())
            }
            messages::SetEncryptedTyping::CONSTRUCTOR_ID => {
                let f: messages::SetEncryptedTyping = decode(query)?;
                self.account(me)?;
                let chat = self.resolve_chat(me, &f.peer)?;
                if chat.status != ChatStatus::Accepted {
                    return Err(bad("ENCRYPTION_DECLINED"));
                }
                if f.typing {
                    let update =
                        enums::Update::EncryptedChatTyping(types::UpdateEncryptedChatTyping {
                            chat_id: chat.id,
                        });
                    let short =
                        enums::Updates::UpdateShort(types::UpdateShort { update, date: now });
                    fx.pushes.push((chat.peer_of(me), short.to_bytes()));
                }
                Ok(true.to_bytes())
            }
            messages::ReceivedQueue::CONSTRUCTOR_ID => {
                let f: messages::ReceivedQueue = decode(query)?;
                if f.max_qts < 0 {
                    return Err(bad("MAX_QTS_INVALID"));
                }
                let acc = self.account_mut(me)?;
                let keep = acc.queue.split_off(&f.max_qts.saturating_add(1));
                let gone = std::mem::replace(&mut acc.queue, keep);
                if !gone.is_empty() {
                    fx.mutated = true;
                }
                let ids: Vec<i64> = gone.values().map(|m| m.random_id).collect();
                Ok(ids.to_bytes())
            }
            _ => Err(bad("METHOD_NOT_IMPLEMENTED")),
        }
    }

    fn get_difference(
        &mut self,
        me: AccountId,
        f: &functions::updates::GetDifference,
        now: i32,
        fx: &mut Effects,
    ) -> Result<Vec<u8>, RpcError> {
        let acc = self.account_mut(me)?;
        // Acknowledge (the passed qts / pts) and expire.
        let before = (acc.queue.len(), acc.chat_events.len());
        acc.queue = acc.queue.split_off(&f.qts.saturating_add(1));
        acc.queue
            .retain(|_, m| now.saturating_sub(m.date) <= QUEUE_TTL_SECS);
        acc.chat_events = acc.chat_events.split_off(&f.pts.saturating_add(1));
        if before != (acc.queue.len(), acc.chat_events.len()) {
            fx.mutated = true;
        }
        let acc = &self.accounts[&me];
        if acc.queue.is_empty() && acc.chat_events.is_empty() {
            return Ok(
                enums::updates::Difference::Empty(types::updates::DifferenceEmpty {
                    date: now,
                    seq: 0,
                })
                .to_bytes(),
            );
        }
        let limit = f
            .qts_limit
            .filter(|&l| l > 0)
            .map_or(usize::MAX, |l| l as usize);
        let messages: Vec<&QueuedMessage> = acc.queue.values().take(limit).collect();
        let slice = messages.len() < acc.queue.len();
        let qts = if slice {
            messages.last().map_or(f.qts, |m| m.qts)
        } else {
            acc.qts
        };
        let new_encrypted_messages = messages.iter().map(|m| encrypted_message(m)).collect();
        let mut users = Vec::new();
        let other_updates = acc
            .chat_events
            .values()
            .filter_map(|e| {
                let mut chat = self.chats.get(&e.chat_id)?.clone();
                chat.status = e.status.clone();
                for u in [chat.admin_id, chat.participant_id] {
                    if let Some(obj) = self.user_obj(u, me)
                        && !users.contains(&obj)
                    {
                        users.push(obj);
                    }
                }
                Some(enums::Update::Encryption(types::UpdateEncryption {
                    chat: objects::encrypted_chat(&chat, me),
                    date: e.date,
                }))
            })
            .collect();
        let state = enums::updates::State::State(types::updates::State {
            pts: acc.pts,
            qts,
            date: now,
            seq: 0,
            unread_count: 0,
        });
        let d = if slice {
            enums::updates::Difference::Slice(types::updates::DifferenceSlice {
                new_messages: Vec::new(),
                new_encrypted_messages,
                other_updates,
                chats: Vec::new(),
                users,
                intermediate_state: state,
            })
        } else {
            enums::updates::Difference::Difference(types::updates::Difference {
                new_messages: Vec::new(),
                new_encrypted_messages,
                other_updates,
                chats: Vec::new(),
                users,
                state,
            })
        };
        Ok(d.to_bytes())
    }

    fn request_encryption(
        &mut self,
        me: AccountId,
        f: functions::messages::RequestEncryption,
        now: i32,
        env: &mut Env<'_>,
        fx: &mut Effects,
    ) -> Result<Vec<u8>, RpcError> {
        self.account(me)?;
        let peer = self
            .resolve_user(me, &f.user_id)
            .filter(|&p| p != me)
            .ok_or_else(|| bad("USER_ID_INVALID"))?;
        if self.is_blocked(peer, me) {
            return Err(err(403, "USER_IS_BLOCKED"));
        }
        if self.is_blocked(me, peer) {
            return Err(bad("YOU_BLOCKED_USER"));
        }
        if dh::check_public_value(env.dh, &f.g_a).is_err() {
            return Err(bad("DH_G_A_INVALID"));
        }
        if f.random_id == 0 {
            return Err(bad("RANDOM_ID_INVALID"));
        }
        if let Some(c) = self.chats.get(&f.random_id) {
            if c.admin_id == me && c.participant_id == peer && c.g_a == f.g_a {
                // A retry of the same request.
                return Ok(objects::encrypted_chat(c, me).to_bytes());
            }
            return Err(bad("RANDOM_ID_DUPLICATE"));
        }
        let chat = SecretChat {
            id: f.random_id,
            access_hash: env.rng.next_i64(),
            date: now,
            admin_id: me,
            participant_id: peer,
            g_a: f.g_a,
            g_b: Vec::new(),
            key_fingerprint: 0,
            status: ChatStatus::Waiting,
        };
        let answer = objects::encrypted_chat(&chat, me).to_bytes();
        self.chats.insert(chat.id, chat);
        fx.mutated = true;
        self.chat_update(peer, f.random_id, now, fx);
        Ok(answer)
    }

    fn accept_encryption(
        &mut self,
        me: AccountId,
        f: functions::messages::AcceptEncryption,
        now: i32,
        env: &mut Env<'_>,
        fx: &mut Effects,
    ) -> Result<Vec<u8>, RpcError> {
        self.account(me)?;
        let chat = self.resolve_chat(me, &f.peer)?;
        if chat.participant_id != me {
            return Err(bad("CHAT_ID_INVALID"));
        }
        match chat.status {
            ChatStatus::Accepted => return Err(bad("ENCRYPTION_ALREADY_ACCEPTED")),
            ChatStatus::Discarded { .. } => return Err(bad("ENCRYPTION_ALREADY_DECLINED")),
            ChatStatus::Waiting => {}
        }
        if dh::check_public_value(env.dh, &f.g_b).is_err() {
            return Err(bad("DH_G_B_INVALID"));
        }
        let id = chat.id;
        let admin = chat.admin_id;
        let chat = self
            .chats
            .get_mut(&id)
            .ok_or_else(|| bad("CHAT_ID_INVALID"))?;
        chat.g_b = f.g_b;
        chat.key_fingerprint = f.key_fingerprint;
        chat.status = ChatStatus::Accepted;
        let answer = objects::encrypted_chat(chat, me).to_bytes();
        fx.mutated = true;
        self.chat_update(admin, id, now, fx);
        // The acceptor learns of its own acceptance too (queued, so a lost answer is not the
        // only news of it): the same encryptedChat as the answer.
        self.chat_update(me, id, now, fx);
        Ok(answer)
    }

    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        me: AccountId,
        peer: &enums::InputEncryptedChat,
        random_id: i64,
        data: Vec<u8>,
        service: bool,
        now: i32,
        fx: &mut Effects,
    ) -> Result<Vec<u8>, RpcError> {
        self.account(me)?;
        let chat = self.resolve_chat(me, peer)?;
        if chat.status != ChatStatus::Accepted {
            return Err(bad("ENCRYPTION_DECLINED"));
        }
        let chat_id = chat.id;
        let to = chat.peer_of(me);
        if self.is_blocked(to, me) {
            return Err(err(403, "USER_IS_BLOCKED"));
        }
        if self.is_blocked(me, to) {
            return Err(bad("YOU_BLOCKED_USER"));
        }
        if data.len() > MAX_DATA_LEN {
            return Err(bad("DATA_TOO_LONG"));
        }
        if data.len() < 24 || !(data.len() - 24).is_multiple_of(16) {
            return Err(bad("DATA_INVALID"));
        }
        // A repeat (a retry whose answer was lost, or the answer to the peer's Resend) is
        // relayed again and answered with the first date.
        let answered = match self.sent.get(&(me, random_id)) {
            Some(first) if first.chat_id != chat_id => return Err(bad("RANDOM_ID_DUPLICATE")),
            Some(first) => first.date,
            None => now,
        };
        let acc = self.account_mut(to)?;
        acc.qts += 1;
        let qts = acc.qts;
        let m = QueuedMessage {
            qts,
            chat_id,
            random_id,
            date: now,
            data,
            service,
        };
        let update = enums::Update::NewEncryptedMessage(types::UpdateNewEncryptedMessage {
            message: encrypted_message(&m),
            qts,
        });
        let relayed = Relayed {
            sender: me,
            recipient: to,
            chat_id,
            random_id,
            date: now,
            qts,
            service,
            data: m.data.clone(),
        };
        acc.queue.insert(qts, m);
        self.relayed.push(relayed);
        self.sent
            .entry((me, random_id))
            .or_insert(SentRecord { chat_id, date: now });
        fx.mutated = true;
        fx.pushes.push((to, updates_of(update, Vec::new(), now)));
        Ok(
            enums::messages::SentEncryptedMessage::Message(types::messages::SentEncryptedMessage {
                date: answered,
            })
            .to_bytes(),
        )
    }
}

/// What calls need besides the world.
struct Env<'a> {
    rng: &'a mut (dyn SecureRandom + Send),
    dh: &'a DhConfig,
}

struct Inner {
    world: World,
    path: Option<PathBuf>,
    rng: Box<dyn SecureRandom + Send>,
}

/// The Telegram model: a [`World`] behind a mutex, answering API calls.
pub struct Model {
    inner: Mutex<Inner>,
    sink: Arc<dyn UpdateSink>,
    dh: DhConfig,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").finish_non_exhaustive()
    }
}

impl Model {
    /// An empty world. With `state_path`, every change is written there (an existing file is
    /// overwritten at the first change: use [`Model::open`] to continue from it).
    pub fn new(sink: Arc<dyn UpdateSink>, state_path: Option<PathBuf>) -> Model {
        Self::with_rng(sink, state_path, Box::new(SystemRandom::new()))
    }

    /// Like [`Model::new`] with injected randomness (access hashes, `dhConfig.random`).
    pub fn with_rng(
        sink: Arc<dyn UpdateSink>,
        state_path: Option<PathBuf>,
        rng: Box<dyn SecureRandom + Send>,
    ) -> Model {
        Self::from_world(sink, World::default(), state_path, rng)
    }

    /// Continues from the state file at `path` (an empty world if there is none yet), and keeps
    /// writing to it.
    pub fn open(sink: Arc<dyn UpdateSink>, path: impl Into<PathBuf>) -> io::Result<Model> {
        let path = path.into();
        let world = match fs::read(&path) {
            Ok(bytes) => decode_world(&bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => World::default(),
            Err(e) => return Err(e),
        };
        Ok(Self::from_world(
            sink,
            world,
            Some(path),
            Box::new(SystemRandom::new()),
        ))
    }

    fn from_world(
        sink: Arc<dyn UpdateSink>,
        world: World,
        path: Option<PathBuf>,
        rng: Box<dyn SecureRandom + Send>,
    ) -> Model {
        // ok: validating a compile-time constant prime with g = 3 cannot fail (tested).
        #[allow(clippy::expect_used)]
        let dh = DhConfig::validate(DH_G, &TELEGRAM_DH_PRIME, DH_VERSION)
            .expect("the Telegram prime and g = 3 are valid");
        Model {
            inner: Mutex::new(Inner { world, path, rng }),
            sink,
            dh,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic inside a call cannot leave the world half-changed when persisting (calls work
        // on a copy); without persistence a poisoned world is still the best we have.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the world outside an API call (administration), persisting like a call.
    pub fn update<R>(&self, f: impl FnOnce(&mut World) -> R) -> io::Result<R> {
        let mut inner = self.lock();
        let mut next = inner.world.clone();
        let r = f(&mut next);
        if let Some(p) = &inner.path {
            save_world(p, &next)?;
        }
        inner.world = next;
        Ok(r)
    }

    /// Adds an account (the account id is the user id).
    pub fn add_account(
        &self,
        user_id: i64,
        phone: &str,
        first_name: &str,
    ) -> io::Result<AccountId> {
        self.update(|w| w.add_account(user_id, phone, first_name))?
            .map_err(|e| io::Error::new(io::ErrorKind::AlreadyExists, e))
    }

    /// Makes sure account `user_id` exists with this phone: created if missing, kept if it has
    /// the same phone digits, an error if it has another phone.
    pub fn ensure_account(
        &self,
        user_id: i64,
        phone: &str,
        first_name: &str,
    ) -> Result<(), String> {
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        match self.snapshot().accounts.get(&user_id) {
            Some(a) if a.phone == digits => Ok(()),
            Some(a) => Err(format!(
                "account {user_id} exists with phone {}, not {phone}",
                a.phone
            )),
            None => self
                .add_account(user_id, phone, first_name)
                .map(drop)
                .map_err(|e| format!("cannot add account {user_id}: {e}")),
        }
    }

    /// Sets an account's two-step password `(password, hint)`, or removes it with `None`
    /// (the server keeps the salts and the SRP verifier, never the password).
    pub fn set_password(
        &self,
        account: AccountId,
        password: Option<(&str, &str)>,
    ) -> io::Result<()> {
        let record =
            password.map(|(pw, hint)| login::Password::new(pw, hint, &mut *self.lock().rng));
        self.update(|w| w.set_password(account, record))?
            .map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))
    }

    /// Logs the device of `account` out as `auth.logOut` does (what the user does when they
    /// terminate the session from another device): its secret chats are discarded, the peers
    /// told, and its key answers only the login calls.
    pub fn log_out(&self, account: AccountId, now_s: i32) -> io::Result<()> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if !inner.world.accounts.contains_key(&account) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such account"));
        }
        let mut fx = Effects::default();
        let mut next = inner.world.clone();
        next.log_out(account, now_s, &mut fx);
        if let Some(p) = &inner.path {
            save_world(p, &next)?;
        }
        inner.world = next;
        self.deliver(&inner.world, fx.pushes);
        Ok(())
    }

    /// Pushes updates (under the lock, so every account sees its updates in qts order). A
    /// logged-out device gets none: it learns what is queued through getDifference once it
    /// is signed in again.
    fn deliver(&self, world: &World, pushes: Vec<(AccountId, Vec<u8>)>) {
        for (account, bytes) in pushes {
            if !world.signed_out(account) {
                self.sink.push(account, bytes);
            }
        }
    }

    /// `a` blocks `b`.
    pub fn block(&self, a: AccountId, b: AccountId) -> io::Result<()> {
        self.update(|w| {
            w.blocked.insert((a, b));
        })
    }

    /// `a` unblocks `b`.
    pub fn unblock(&self, a: AccountId, b: AccountId) -> io::Result<()> {
        self.update(|w| {
            w.blocked.remove(&(a, b));
        })
    }

    /// A copy of the whole world.
    pub fn snapshot(&self) -> World {
        self.lock().world.clone()
    }

    /// Every delivery of an encrypted message so far, in order (repeats of a random_id
    /// included).
    pub fn relayed(&self) -> Vec<Relayed> {
        self.lock().world.relayed.clone()
    }

    /// A chat, if it exists.
    pub fn chat(&self, id: i32) -> Option<SecretChat> {
        self.lock().world.chats.get(&id).cloned()
    }

    /// The account's current qts (0 for an unknown account).
    pub fn qts(&self, account: AccountId) -> i32 {
        self.lock()
            .world
            .accounts
            .get(&account)
            .map_or(0, |a| a.qts)
    }

    /// The account's unacknowledged messages, in qts order.
    pub fn queued(&self, account: AccountId) -> Vec<QueuedMessage> {
        self.lock()
            .world
            .accounts
            .get(&account)
            .map(|a| a.queue.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl ApiHandler for Model {
    fn call(&self, ctx: &CallContext, constructor: u32, query: &[u8]) -> Result<Vec<u8>, RpcError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut fx = Effects::default();
        let mut env = Env {
            rng: &mut *inner.rng,
            dh: &self.dh,
        };
        let answer = match &inner.path {
            Some(path) if MUTATING.contains(&constructor) => {
                let mut next = inner.world.clone();
                let answer = next.call(ctx, constructor, query, &mut env, &mut fx);
                if fx.mutated {
                    if save_world(path, &next).is_err() {
                        return Err(err(500, "INTERNAL_SERVER_ERROR"));
                    }
                    inner.world = next;
                }
                answer
            }
            _ => inner.world.call(ctx, constructor, query, &mut env, &mut fx),
        };
        self.deliver(&inner.world, fx.pushes);
        answer
    }
}

/// Serializes a world in the state file format.
pub fn encode_world(world: &World) -> io::Result<Vec<u8>> {
    let body = postcard::to_stdvec(world).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&STATE_MAGIC);
    out.extend_from_slice(&STATE_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Parses the state file format.
pub fn decode_world(bytes: &[u8]) -> io::Result<World> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    if bytes.len() < 16 || bytes[..8] != STATE_MAGIC {
        return Err(bad("not a tgsim state file"));
    }
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let version = word(8);
    if version != STATE_VERSION && version != 1 {
        return Err(bad(&format!(
            "state file version {version} is not supported"
        )));
    }
    let body = &bytes[16..];
    if crc32fast::hash(body) != word(12) {
        return Err(bad("state file checksum mismatch"));
    }
    let body_error = |e: postcard::Error| bad(&format!("state file body: {e}"));
    if version == 1 {
        return postcard::from_bytes::<WorldV1>(body)
            .map(World::from)
            .map_err(body_error);
    }
    postcard::from_bytes(body).map_err(body_error)
}

/// Writes `world` to `path` atomically and durably: temp file, fsync, rename, fsync of the
/// directory.
pub fn save_world(path: &Path, world: &World) -> io::Result<()> {
    let bytes = encode_world(world)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}
