//! OTLP/gRPC: `opentelemetry.proto.collector.logs.v1.LogsService/Export`,
//! answered by the gRPC [`Handler`] through [`super::export`].

use std::{sync::Arc, time::Instant};

use log_server_wire::otlp::collector::logs::v1::ExportLogsServiceResponse;
use tonic::{Request, Response, Status};

use crate::ingest::grpc::{
    budget::Charge, service::otlp::logs_service_server::LogsService, Handler,
};

#[tonic::async_trait]
impl LogsService for Handler {
    async fn export(
        &self,
        request: Request<super::RawExport>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let received = Instant::now();
        // The request's bytes stay charged until its lines are formatted.
        let charge = request.extensions().get::<Arc<Charge>>().cloned();
        super::export(self, request.into_inner(), charge, received)
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}
