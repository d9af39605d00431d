//! The running link: one grammers `SenderPool` per account (with `NoRetries`: nothing is sent
//! again behind the caller's back), calls with a timeout and a class, the update stream, and
//! the login steps.
//!
//! Updates go through a channel of our own between the pool and grammers' `UpdatesReceiver`,
//! so that [`Link::force_difference`] can inject `ConnectionClosed`: `updateEncryption` has no
//! sequence number, and a lost one is only found again through `updates.getDifference`.
//! [`Updates::next`] hands out one batch; the caller commits it durably together with
//! [`Updates::stage_state`]'s snapshot, and only then acknowledges (`messages.receivedQueue`)
//! and asks for the next batch.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use grammers_client::Client;
use grammers_client::client::{LoginToken, PasswordToken};
use grammers_mtsender::{
    ConnectionParams, InvocationError, NoRetries, SenderPool, SenderPoolFatHandle,
    UpdatesConfiguration, UpdatesReceiver,
};
use grammers_session::updates::UpdatesLike;
use grammers_tl_types as tl;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::errors::{ErrorClass, classify, error_name};
use crate::session::{LinkSession, SessionSnapshot};

/// How the link connects.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// The application's api_id (my.telegram.org).
    pub api_id: i32,
    /// The application's api_hash.
    pub api_hash: String,
    /// Longest wait for one call's answer; past it the call counts as lost (retry).
    pub call_timeout: Duration,
}

/// A failed call: its class and Telegram name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    /// What to do about it.
    pub class: ErrorClass,
    /// The Telegram error name (`FLOOD_WAIT`, `ENCRYPTION_DECLINED`) or a local one
    /// (`NETWORK_ERROR`, `TIMEOUT`).
    pub name: String,
    /// Words for a person.
    pub message: String,
}

impl CallError {
    fn from_invocation(e: &InvocationError) -> CallError {
        CallError {
            class: classify(e),
            name: error_name(e),
            message: e.to_string(),
        }
    }

    fn timeout(after: Duration) -> CallError {
        CallError {
            class: ErrorClass::RetryNow,
            name: "TIMEOUT".into(),
            message: format!("no answer within {} s", after.as_secs()),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for CallError {}

/// One step of a login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginStep {
    /// Logged in as this user.
    Done {
        /// The user id.
        user_id: i64,
    },
    /// The code was sent; call [`Link::sign_in`] with it.
    CodeSent,
    /// The account has a two-step password; call [`Link::check_password`].
    PasswordRequired {
        /// The password hint.
        hint: Option<String>,
    },
    /// The code or the password was wrong; try again.
    Invalid,
    /// The phone number has no account (sign-up is not supported).
    SignUpRequired,
}

struct LoginState {
    token: Option<LoginToken>,
    password: Option<PasswordToken>,
}

/// The running link.
pub struct Link {
    client: Client,
    handle: SenderPoolFatHandle,
    session: Arc<LinkSession>,
    config: LinkConfig,
    inject: mpsc::Sender<UpdatesLike>,
    updates_rx: Mutex<Option<mpsc::Receiver<UpdatesLike>>>,
    runner: Mutex<Option<JoinHandle<()>>>,
    forwarder: Mutex<Option<JoinHandle<()>>>,
    login: Mutex<LoginState>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Capacity of our channel in front of the receiver (grammers' own holds 100 and drops beyond).
const UPDATES_CAPACITY: usize = 4096;

impl Link {
    /// Starts the sender pool on the current tokio runtime. Connecting happens on the first call.
    pub fn start(config: LinkConfig, session: Arc<LinkSession>) -> Arc<Link> {
        let params = ConnectionParams {
            retry_policy: Box::new(NoRetries),
            updates_channel_capacity: std::num::NonZeroUsize::new(UPDATES_CAPACITY)
                .unwrap_or(std::num::NonZeroUsize::MIN),
            device_model: "tgsecretd".into(),
            app_version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        let SenderPool {
            runner,
            handle,
            updates: mut pool_updates,
        } = SenderPool::with_configuration(Arc::clone(&session), config.api_id, params);
        let runner = tokio::spawn(runner.run());
        let (inject, rx) = mpsc::channel(UPDATES_CAPACITY);
        let fwd = inject.clone();
        let forwarder = tokio::spawn(async move {
            while let Some(u) = pool_updates.recv().await {
                if fwd.send(u).await.is_err() {
                    break;
                }
            }
        });
        Arc::new(Link {
            client: Client::new(handle.clone()),
            handle,
            session,
            config,
            inject,
            updates_rx: Mutex::new(Some(rx)),
            runner: Mutex::new(Some(runner)),
            forwarder: Mutex::new(Some(forwarder)),
            login: Mutex::new(LoginState {
                token: None,
                password: None,
            }),
        })
    }

    /// The session.
    pub fn session(&self) -> &Arc<LinkSession> {
        &self.session
    }

    /// Calls `request` once (no retries here: the caller retries by the error's class, with the
    /// same request).
    pub async fn invoke<R: tl::RemoteCall>(&self, request: &R) -> Result<R::Return, CallError> {
        let t = self.config.call_timeout;
        match tokio::time::timeout(t, self.client.invoke(request)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(CallError::from_invocation(&e)),
            Err(_) => Err(CallError::timeout(t)),
        }
    }

    /// Makes the update stream ask `updates.getDifference` (after an I/O error, after
    /// request/accept/discard answers, when idle): the only way to find a lost
    /// `updateEncryption` again.
    pub fn force_difference(&self) {
        let _ = self.inject.try_send(UpdatesLike::ConnectionClosed);
    }

    /// Whether the account is logged in (`updates.getState` answers).
    pub async fn is_authorized(&self) -> Result<bool, CallError> {
        let t = self.config.call_timeout;
        match tokio::time::timeout(t, self.client.is_authorized()).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => Err(CallError::from_invocation(&e)),
            Err(_) => Err(CallError::timeout(t)),
        }
    }

    /// For an account whose key was provisioned (no sign-in here): learns and caches the self
    /// user, which grammers needs to treat the account as logged in.
    pub async fn learn_self(&self) -> Result<i64, CallError> {
        if let Some(id) = self.session.self_user() {
            return Ok(id);
        }
        let users = self
            .invoke(&tl::functions::users::GetUsers {
                id: vec![tl::enums::InputUser::UserSelf],
            })
            .await?;
        let Some(tl::enums::User::User(u)) = users.into_iter().next() else {
            return Err(CallError {
                class: ErrorClass::LoggedOut,
                name: "USER_EMPTY".into(),
                message: "the server knows no self user".into(),
            });
        };
        self.session
            .set_self_user(u.id, u.access_hash.unwrap_or(0))
            .await
            .map_err(|e| CallError {
                class: ErrorClass::RetryNow,
                name: "SESSION_ERROR".into(),
                message: e.to_string(),
            })?;
        Ok(u.id)
    }

    /// Starts the update stream (once; `None` if it was taken already). It begins with a
    /// getDifference from the stored state (`catch_up`), so nothing queued while the daemon
    /// was away is skipped.
    pub async fn updates(&self) -> Result<Option<Updates>, CallError> {
        let Some(rx) = lock(&self.updates_rx).take() else {
            return Ok(None);
        };
        let receiver = UpdatesReceiver::create(
            self.handle.thin.clone(),
            Arc::clone(&self.handle.session),
            rx,
            UpdatesConfiguration { catch_up: true },
        )
        .await
        .map_err(|e| CallError {
            class: ErrorClass::RetryNow,
            name: "SESSION_ERROR".into(),
            message: e.to_string(),
        })?;
        Ok(Some(Updates {
            receiver,
            session: Arc::clone(&self.session),
        }))
    }

    /// Login, step 1: sends the code to `phone`.
    pub async fn request_login_code(&self, phone: &str) -> Result<LoginStep, CallError> {
        let token = self
            .client
            .request_login_code(phone, &self.config.api_hash)
            .await
            .map_err(|e| CallError::from_invocation(&e))?;
        lock(&self.login).token = Some(token);
        Ok(LoginStep::CodeSent)
    }

    /// Login, step 2: the code the user received.
    pub async fn sign_in(&self, code: &str) -> Result<LoginStep, CallError> {
        use grammers_client::SignInError as E;
        let Some(token) = lock(&self.login).token.take() else {
            return Err(login_order("request a login code first"));
        };
        match self.client.sign_in(&token, code).await {
            Ok(user) => Ok(LoginStep::Done {
                user_id: user.id().bare_id().unwrap_or(0),
            }),
            Err(E::PasswordRequired(p)) => {
                let hint = p.hint().map(str::to_owned);
                lock(&self.login).password = Some(p);
                Ok(LoginStep::PasswordRequired { hint })
            }
            Err(E::InvalidCode) => {
                lock(&self.login).token = Some(token);
                Ok(LoginStep::Invalid)
            }
            Err(E::SignUpRequired) => Ok(LoginStep::SignUpRequired),
            Err(E::InvalidPassword(_)) => Ok(LoginStep::Invalid),
            Err(E::Other(e)) => Err(CallError::from_invocation(&e)),
        }
    }

    /// Login, step 3 (two-step accounts): the password.
    pub async fn check_password(&self, password: &str) -> Result<LoginStep, CallError> {
        use grammers_client::SignInError as E;
        let Some(token) = lock(&self.login).password.take() else {
            return Err(login_order("no password was asked for"));
        };
        match self.client.check_password(token, password).await {
            Ok(user) => Ok(LoginStep::Done {
                user_id: user.id().bare_id().unwrap_or(0),
            }),
            Err(E::InvalidPassword(p)) => {
                lock(&self.login).password = Some(p);
                Ok(LoginStep::Invalid)
            }
            Err(E::Other(e)) => Err(CallError::from_invocation(&e)),
            Err(_) => Ok(LoginStep::Invalid),
        }
    }

    /// Stops the pool and its tasks.
    pub async fn shutdown(&self) {
        self.handle.thin.quit();
        let runner = lock(&self.runner).take();
        if let Some(r) = runner {
            let _ = r.await;
        }
        let forwarder = lock(&self.forwarder).take();
        if let Some(f) = forwarder {
            f.abort();
            let _ = f.await;
        }
    }
}

/// The local error name of a login step taken out of order.
pub const LOGIN_ORDER: &str = "LOGIN_ORDER";

fn login_order(what: &str) -> CallError {
    CallError {
        class: ErrorClass::TerminalRequest,
        name: LOGIN_ORDER.into(),
        message: what.into(),
    }
}

/// One batch of updates.
pub type UpdateBatch = Vec<tl::enums::Update>;

/// The update stream of the account.
pub struct Updates {
    receiver: UpdatesReceiver,
    session: Arc<LinkSession>,
}

impl fmt::Debug for Updates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Updates").finish_non_exhaustive()
    }
}

impl Updates {
    /// The next batch (one pushed `Updates`, or one getDifference answer). grammers orders and
    /// gap-checks `updateNewEncryptedMessage` by qts; the rest comes as it came.
    pub async fn next(&mut self) -> Result<UpdateBatch, CallError> {
        let (updates, _users, _chats) = self
            .receiver
            .next()
            .await
            .map_err(|e| CallError::from_invocation(&e))?;
        Ok(updates.into_iter().map(|(u, _)| u).collect())
    }

    /// The session snapshot covering every batch handed out so far, to commit with them. Call
    /// [`LinkSession::committed`] once that commit is durable.
    pub async fn stage_state(&self) -> Result<Option<SessionSnapshot>, CallError> {
        self.session.stage();
        let synced = self.receiver.sync_update_state().await;
        let staged = self.session.take_staged();
        synced.map_err(|e| CallError {
            class: ErrorClass::RetryNow,
            name: "SESSION_ERROR".into(),
            message: e.to_string(),
        })?;
        Ok(staged)
    }
}
