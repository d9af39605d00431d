//! `Properties.Set` on a read-only property answers
//! `org.freedesktop.DBus.Error.PropertyReadOnly`, as the D-Bus specification names it (sd-bus
//! and GDBus refuse it so too; busctl then says "Property is read-only").
//!
//! Every property of the daemon's objects is read-only: a state change is a call that goes
//! through the chat's actor and the store (`SendServiceAction` for the TTL, say), never an
//! assignment. zbus 6's `#[interface]` answers `Set` of a property that has no setter with
//! `UnknownProperty`, for a property its own introspection lists. [`ReadOnly`] wraps a generated
//! interface, passes everything else to it unchanged (the introspection XML included), and
//! answers such a `Set` with `PropertyReadOnly`; a name the interface does not have stays
//! `UnknownProperty`. Nothing is written either way.
//!
//! `GetAll` (and the property sets of `InterfacesAdded` and `GetManagedObjects`) comes from
//! [`AllProperties`] when the interface can read every property at once: a chat's from one read
//! of its stored view, so the values are one consistent state (the generated `GetAll` asks each
//! getter, each its own store read, and a commit between two reads mixed two states). When that
//! read fails (a chat being forgotten, the daemon stopping), the generated `GetAll` answers, as
//! zbus means it to: a property whose getter fails is left out, and the call itself succeeds,
//! so one such chat cannot fail `GetManagedObjects` for all of them.
//!
//! zbus documents its `Interface` trait as unstable across minor versions and implemented by
//! its macro: the workspace pins zbus to `~6.2` for this wrapper; a zbus upgrade re-checks it
//! (every method passed through, `Set` of a read-only property, `GetAll`).

use std::collections::HashMap;

use zbus::message::Header;
use zbus::names::{InterfaceName, MemberName};
use zbus::object_server::{DispatchResult, Interface, SignalEmitter};
use zbus::{BoxDBusError, Connection, ObjectServer, OwnedVariant, Variant, fdo, message::Message};

/// A zbus interface whose properties refuse `Set` as read-only (see the module doc).
pub struct ReadOnly<I>(pub I);

/// Every property of an interface read at once, for `GetAll`.
pub trait AllProperties {
    /// All the properties, by D-Bus name, from one consistent state; `None` (it cannot, or
    /// the read failed): the interface reads them one by one (its generated `GetAll`).
    fn all_properties(&self) -> Option<HashMap<String, OwnedVariant>> {
        None
    }
}

#[async_trait::async_trait]
impl<I: Interface + AllProperties> Interface for ReadOnly<I> {
    fn name() -> InterfaceName<'static> {
        I::name()
    }

    fn spawn_tasks_for_methods(&self) -> bool {
        self.0.spawn_tasks_for_methods()
    }

    async fn get(
        &self,
        property_name: &str,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<Result<OwnedVariant, BoxDBusError>> {
        self.0
            .get(property_name, server, connection, header, emitter)
            .await
    }

    async fn get_all(
        &self,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> fdo::Result<HashMap<String, OwnedVariant>> {
        match self.0.all_properties() {
            Some(all) => Ok(all),
            None => self.0.get_all(server, connection, header, emitter).await,
        }
    }

    fn set<'call>(
        &'call self,
        property_name: &'call str,
        value: &'call Variant<'_>,
        server: &'call ObjectServer,
        connection: &'call Connection,
        header: Option<&'call Header<'_>>,
        emitter: &'call SignalEmitter<'_>,
    ) -> DispatchResult<'call> {
        match self
            .0
            .set(property_name, value, server, connection, header, emitter)
        {
            DispatchResult::NotFound => DispatchResult::Async(Box::pin(async move {
                // The getter says whether the interface has the property (the generated `set`
                // cannot tell a read-only property from an unknown name).
                let known = self
                    .0
                    .get(property_name, server, connection, header, emitter)
                    .await
                    .is_some();
                Err(Box::new(refusal(property_name, known)) as BoxDBusError)
            })),
            other => other,
        }
    }

    async fn set_mut(
        &mut self,
        property_name: &str,
        value: &Variant<'_>,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<Result<(), BoxDBusError>> {
        self.0
            .set_mut(property_name, value, server, connection, header, emitter)
            .await
    }

    fn call<'call>(
        &'call self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult<'call> {
        self.0.call(server, connection, msg, name)
    }

    fn call_mut<'call>(
        &'call mut self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult<'call> {
        self.0.call_mut(server, connection, msg, name)
    }

    fn introspect_to_writer(&self, writer: &mut dyn std::fmt::Write, level: usize) {
        self.0.introspect_to_writer(writer, level);
    }
}

/// The answer to `Set` of `name`: read-only if the interface has it, else unknown.
fn refusal(name: &str, known: bool) -> fdo::Error {
    if known {
        fdo::Error::PropertyReadOnly(format!("property '{name}' is read-only"))
    } else {
        fdo::Error::UnknownProperty(format!("unknown property '{name}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError;

    #[test]
    fn a_known_property_is_read_only_and_another_name_unknown() {
        let e = refusal("TtlSeconds", true);
        assert_eq!(e.name(), "org.freedesktop.DBus.Error.PropertyReadOnly");
        assert_eq!(e.description(), Some("property 'TtlSeconds' is read-only"));
        let e = refusal("Nope", false);
        assert_eq!(e.name(), "org.freedesktop.DBus.Error.UnknownProperty");
    }
}
