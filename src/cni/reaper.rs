//! Link deletion off the async runtime.
//!
//! The kernel handles a netlink request inside the sender's `sendmsg`, and deleting a
//! veth waits for RCU grace periods there (15–25 ms per link on a small VM). Sent from
//! the shared host connection, that would stall a tokio worker and every other host
//! request queued behind it. So deletions go to one dedicated thread that lives in the
//! node namespace with its own netlink socket and current-thread runtime, for the
//! Cni's life (it ends when the Cni, holding the only sender, is dropped).

use std::fs::File;
use std::sync::Arc;

use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use tokio::sync::{mpsc, oneshot};

use super::nl::{errno, fail};
use super::{nsthread, CniError};

type Job = (String, oneshot::Sender<Result<(), CniError>>);

/// Handle to the deletion thread.
pub(crate) struct Reaper {
    tx: mpsc::UnboundedSender<Job>,
}

impl Reaper {
    /// Starts the thread inside `host_ns`.
    pub(crate) fn start(host_ns: Arc<File>) -> Result<Reaper, CniError> {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("k3rs-cni-reaper".into())
            .spawn(move || run(host_ns, rx))
            .map_err(|source| CniError::Io {
                what: "spawn link deletion thread in",
                path: nsthread::SELF_NS.into(),
                source,
            })?;
        Ok(Reaper { tx })
    }

    /// Deletes link `name` in the node namespace; a link that is already gone is fine.
    pub(crate) async fn delete(&self, name: &str) -> Result<(), CniError> {
        let (tx, rx) = oneshot::channel();
        let gone = || CniError::Thread(format!("deleting link {name}"));
        self.tx.send((name.to_string(), tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

fn run(host_ns: Arc<File>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let setup = nsthread::enter(&host_ns).and_then(|()| {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
    });
    let rt = match setup {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("link deletion thread cannot start: {e}");
            // Dropping `rx` makes every delete fail with a clear error.
            return;
        }
    };
    rt.block_on(async move {
        let handle = match rtnetlink::new_connection() {
            Ok((conn, handle, _)) => {
                tokio::spawn(conn);
                handle
            }
            Err(e) => {
                tracing::error!("link deletion thread cannot open a netlink socket: {e}");
                return;
            }
        };
        while let Some((name, reply)) = rx.recv().await {
            // Delete by name: one request, and ENODEV means it is already gone.
            let mut msg = LinkMessage::default();
            msg.attributes.push(LinkAttribute::IfName(name.clone()));
            let result = match handle.link().del_with_message(msg).execute().await {
                Ok(()) => Ok(()),
                Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
                Err(e) => Err(fail(format!("delete link {name}"))(e)),
            };
            let _ = reply.send(result);
        }
    });
}
