//! Servers on loopback for the tests: an accept loop on its own thread and runtime.

use std::future::Future;

/// Listens on a free 127.0.0.1 port and runs `handle` on every connection, each in its own task,
/// on a current-thread runtime of a thread of its own. Returns the port; the server lives as
/// long as the test binary.
pub fn serve<F, Fut>(handle: F) -> u16
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(handle(stream));
            }
        });
    });
    port
}
