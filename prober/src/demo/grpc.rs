//! gRPC health (9685): tonic-health's `grpc.health.v1.Health` reporting
//! SERVING for the server ("") and for [`SERVICE`], over plain HTTP/2.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::ServingStatus;

/// The service the gRPC example asks about.
pub const SERVICE: &str = "orders.v1.Orders";

pub(crate) async fn serve(listener: TcpListener, stop: CancellationToken) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let result = Server::builder()
        .timeout(Duration::from_secs(10))
        .concurrency_limit_per_connection(32)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), stop.cancelled_owned())
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "demo: the gRPC health server stopped");
    }
    drop(reporter);
}
