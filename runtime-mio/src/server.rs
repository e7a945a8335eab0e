//! A listening server's handle: the connections it accepts, its fine-grained events, and
//! closing it (also on drop), with the same names as `hyperdht-async-std`'s `Server`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyperdht_kit::ServerMeta;
use hyperdht_proto::ConnId;

use crate::conn::Connection;
use crate::handle::{Command, HandleInner};

/// How long [`Server::close`] waits for the unannounce from the server's relays.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What happens on a server.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A client's handshake was accepted; its path is being opened.
    Incoming {
        /// The connection.
        conn: ConnId,
        /// The client's key.
        remote_public_key: [u8; 32],
    },
    /// A connection's path is open.
    Connected(Box<Connection>),
}

/// A listening server. [`Server::accept`] blocks for the next open connection; dropping the
/// server closes it (unannounced in the background), [`Server::close`] waits for the
/// unannounce. The server is `Sync`: one thread may accept while another closes it (the
/// accepting thread then gets `None`).
#[derive(Debug)]
pub struct Server {
    inner: Arc<HandleInner>,
    meta: ServerMeta,
    events: Mutex<Receiver<ServerEvent>>,
    closed: AtomicBool,
}

impl Server {
    pub(crate) fn new(
        inner: Arc<HandleInner>,
        meta: ServerMeta,
        events: Receiver<ServerEvent>,
    ) -> Server {
        Server {
            inner,
            meta,
            events: Mutex::new(events),
            closed: AtomicBool::new(false),
        }
    }

    hyperdht_kit::server_accessors!(meta);

    /// Blocks until the next connection is open; `None` once the server or the node is closed.
    pub fn accept(&self) -> Option<Connection> {
        let events = self.events();
        loop {
            match events.recv().ok()? {
                ServerEvent::Connected(c) => return Some(*c),
                ServerEvent::Incoming { .. } => {}
            }
        }
    }

    /// Every event of the server as it happens (accepted handshakes before their paths open,
    /// then the open connections): for `recv_timeout` and `try_recv`. Events taken here are
    /// not seen by [`Server::accept`] (which waits while this is held).
    pub fn events(&self) -> MutexGuard<'_, Receiver<ServerEvent>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the server and waits (at most 5 s) until it is unannounced from its relays. Once
    /// closed, [`Server::accept`] returns `None`.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let (tx, rx) = mpsc::channel();
        if self
            .inner
            .send(Command::CloseServer(self.meta.id, Some(tx)))
            .is_ok()
        {
            let _ = rx.recv_timeout(CLOSE_WAIT);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::SeqCst) {
            let _ = self.inner.send(Command::CloseServer(self.meta.id, None));
        }
    }
}
