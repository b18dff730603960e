//! The demo page (issue 5): two browser tabs join a room and see and hear each other. The page
//! and the gRPC-Web client are embedded at build time, so the binary alone serves them; the
//! page calls the gRPC-Web API on the gRPC port, which `/demo-config.json` names.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const JS: &str = "text/javascript; charset=utf-8";

/// (path, content type, body).
const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../web/demo.html"),
    ),
    ("/demo.js", JS, include_str!("../../web/demo.js")),
    ("/session.js", JS, include_str!("../../web/session.js")),
    (
        "/ringcast-client.js",
        JS,
        include_str!("../../web/ringcast-client.js"),
    ),
    (
        "/protobuf.min.js",
        JS,
        include_str!("../../web/vendor/protobuf.min.js"),
    ),
    (
        "/ringcast.proto",
        "text/plain; charset=utf-8",
        include_str!("../../proto/proto/ringcast/v1/ringcast.proto"),
    ),
];

/// The demo's routes; `grpc_port` is where the page sends its gRPC-Web calls.
pub fn routes(grpc_port: u16) -> Router {
    let config = format!("{{\"grpcPort\":{grpc_port}}}");
    let mut router = Router::new().route(
        "/demo-config.json",
        get(move || {
            let body = config.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    for &(path, content_type, body) in FILES {
        router = router.route(
            path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, content_type),
                        // The page is part of the binary: a new build brings a new page.
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    body,
                )
                    .into_response()
            }),
        );
    }
    router
}

/// The URL to open, with an admin token in the fragment (which browsers never send).
pub fn url(http: std::net::SocketAddr, admin_token: &str) -> String {
    format!("http://{http}/#admin={admin_token}")
}
