//! Watches: one object followed through its changes (the wait of `bootstrap`, the Lease), and
//! what a failed watch means.

use futures::StreamExt;
use kube::api::{Api, DynamicObject};

use super::{Cluster, Error, WATCH_TIMEOUT_SECS};
use crate::flux::Kind;

impl Cluster {
    /// A failed watch as an [`Error`], so that a stopped API server reads as unreachable.
    pub fn watch_error(&self, kind: Kind, name: &str, e: kube::runtime::watcher::Error) -> Error {
        use kube::runtime::watcher::Error as W;
        let what = format!("watching {} `{name}`", kind.name());
        match e {
            W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => {
                self.unreachable_or(&what, e)
            }
            W::WatchError(status) => Error::Refused {
                what,
                message: status.message,
            },
            W::NoResourceVersion => Error::Refused {
                what,
                message: "the watch answered without a resourceVersion".to_string(),
            },
        }
    }

    /// A stream of one object's states, from a watch (not polling): `Some` when it is there or
    /// changed, `None` when it is absent or deleted. After an error the stream goes on (it lists
    /// and watches again when polled), so a caller can resume a dropped watch.
    pub fn watch(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> impl futures::Stream<Item = Result<Option<DynamicObject>, kube::runtime::watcher::Error>>
    + Send
    + use<> {
        watch_one(self.api(kind, Some(namespace)), name)
    }
}

/// True for a watch error that retrying will not cure: the API server answered 403 (RBAC) or
/// 404 (the kind is not served). Connection errors, timeouts and 410 Gone are passing.
pub fn is_refusal(e: &kube::runtime::watcher::Error) -> bool {
    use kube::runtime::watcher::Error as W;
    let status = match e {
        W::InitialListFailed(kube::Error::Api(s))
        | W::WatchStartFailed(kube::Error::Api(s))
        | W::WatchFailed(kube::Error::Api(s)) => s.code,
        W::WatchError(s) => s.code,
        _ => return false,
    };
    matches!(status, 403 | 404)
}

/// `watch_object` of kube-runtime, with a server-side timeout below the client's read timeout.
pub(super) fn watch_one<K>(
    api: Api<K>,
    name: &str,
) -> futures::stream::BoxStream<'static, Result<Option<K>, kube::runtime::watcher::Error>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    use kube::runtime::watcher::{self, Event};
    let config = watcher::Config::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(WATCH_TIMEOUT_SECS);
    watcher::watcher(api, config)
        .scan(false, |seen, event| {
            match &event {
                Ok(Event::Init) => *seen = false,
                Ok(Event::InitApply(_)) => *seen = true,
                _ => {}
            }
            futures::future::ready(Some((*seen, event)))
        })
        .filter_map(|(seen, event)| async move {
            match event {
                Ok(Event::Apply(o) | Event::InitApply(o)) => Some(Ok(Some(o))),
                Ok(Event::Delete(_)) => Some(Ok(None)),
                Ok(Event::InitDone) if !seen => Some(Ok(None)),
                Ok(Event::Init | Event::InitDone) => None,
                Err(e) => Some(Err(e)),
            }
        })
        .boxed()
}
