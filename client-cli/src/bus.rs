//! The connection to the bus and the daemon's manager proxy.

use ipc_proto::ManagerProxy;
use zbus::Connection;
use zbus::proxy::CacheProperties;

use crate::error::CliError;

/// Connects to `address`, else to the session bus (`DBUS_SESSION_BUS_ADDRESS`, else the user's
/// bus). Every failure is [`CliError::Unreachable`].
pub async fn connect(address: Option<&str>) -> Result<Connection, CliError> {
    let builder = match address {
        Some(a) => zbus::connection::Builder::address(a),
        None => zbus::connection::Builder::session(),
    };
    let where_ = address.map_or_else(|| "the session bus".to_owned(), |a| format!("bus {a}"));
    builder
        .build()
        .await
        .map_err(|e| CliError::Unreachable(format!("cannot connect to {where_}: {e}")))
}

/// The daemon's `Manager1` on `conn` (no property cache: every call asks the daemon).
pub async fn manager(conn: &Connection) -> Result<ManagerProxy<'static>, CliError> {
    ManagerProxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(CliError::from)
}

/// A connection and the manager on it.
pub struct Client {
    /// The connection.
    pub conn: Connection,
    /// `io.github.tgsecretd.Manager1`.
    pub manager: ManagerProxy<'static>,
}

impl Client {
    /// Connects (see [`connect`]).
    pub async fn connect(address: Option<&str>) -> Result<Client, CliError> {
        let conn = connect(address).await?;
        let manager = manager(&conn).await?;
        Ok(Client { conn, manager })
    }

    /// Our unique name on the bus (`:1.42`).
    pub fn unique_name(&self) -> Result<String, CliError> {
        self.conn
            .unique_name()
            .map(|n| n.to_string())
            .ok_or_else(|| CliError::Unreachable("the bus gave no unique name".into()))
    }
}
