//! A backend that serves nothing, for testing the routes that do not reach it.

use futures_util::future::BoxFuture;

use crate::containers::{
    AttachOptions, ContainerSummary, Containers, CreateBody, CreateResponse, ExecConfig, ListOptions, LogsOptions, PruneResponse,
    TopResponse, WaitCondition, WaitResponse,
};
use crate::error::ApiError;
use crate::images::Images;
use crate::params::{ByteStream, Filters, Io};

pub struct Null;

fn no<T>() -> Result<T, ApiError> {
    Err(ApiError::not_implemented("this test backend"))
}

#[async_trait::async_trait]
impl Containers for Null {
    async fn changes(&self, _: &str) -> Result<Vec<berth_models::containers::ChangeItem>, ApiError> {
        no()
    }
    async fn export(&self, _: &str) -> Result<ByteStream, ApiError> {
        no()
    }
    async fn archive_stat(&self, _: &str, _: &str) -> Result<berth_models::containers::PathStat, ApiError> {
        no()
    }
    async fn archive_get(&self, _: &str, _: &str) -> Result<(berth_models::containers::PathStat, ByteStream), ApiError> {
        no()
    }
    async fn archive_put(&self, _: &str, _: crate::containers::ArchivePut, _: ByteStream) -> Result<(), ApiError> {
        no()
    }
    async fn commit(&self, _: crate::containers::CommitOptions) -> Result<String, ApiError> {
        no()
    }
    async fn create(&self, _: Option<String>, _: CreateBody) -> Result<CreateResponse, ApiError> {
        no()
    }
    async fn inspect(&self, _: &str, _: bool) -> Result<crate::containers::ContainerInspect, ApiError> {
        no()
    }
    async fn list(&self, _: ListOptions) -> Result<Vec<ContainerSummary>, ApiError> {
        no()
    }
    async fn stats(&self, _: &str) -> Result<berth_models::stats::ContainerStats, ApiError> {
        no()
    }
    async fn pause(&self, _: &str) -> Result<(), ApiError> {
        no()
    }
    async fn unpause(&self, _: &str) -> Result<(), ApiError> {
        no()
    }
    async fn prune(&self, _: Filters) -> Result<PruneResponse, ApiError> {
        no()
    }
    async fn start(&self, _: &str) -> Result<bool, ApiError> {
        no()
    }
    async fn stop(&self, _: &str, _: Option<String>, _: Option<i64>) -> Result<bool, ApiError> {
        no()
    }
    async fn restart(&self, _: &str, _: Option<String>, _: Option<i64>) -> Result<(), ApiError> {
        no()
    }
    async fn kill(&self, _: &str, _: Option<String>) -> Result<(), ApiError> {
        no()
    }
    async fn wait(&self, _: &str, _: WaitCondition) -> Result<BoxFuture<'static, WaitResponse>, ApiError> {
        no()
    }
    async fn remove(&self, _: &str, _: bool, _: bool) -> Result<(), ApiError> {
        no()
    }
    async fn logs(&self, _: &str, _: LogsOptions) -> Result<(bool, ByteStream), ApiError> {
        no()
    }
    async fn attach_check(&self, _: &str) -> Result<bool, ApiError> {
        no()
    }
    async fn attach(&self, _: String, _: AttachOptions, _: Io) {}
    async fn resize(&self, _: &str, _: u16, _: u16) -> Result<(), ApiError> {
        no()
    }
    async fn top(&self, _: &str, _: Option<String>) -> Result<TopResponse, ApiError> {
        no()
    }
    async fn rename(&self, _: &str, _: &str) -> Result<(), ApiError> {
        no()
    }
    async fn update(&self, _: &str, _: crate::containers::HostConfig) -> Result<Vec<String>, ApiError> {
        no()
    }
    async fn exec_create(&self, _: &str, _: ExecConfig) -> Result<String, ApiError> {
        no()
    }
    async fn exec_check(&self, _: &str) -> Result<bool, ApiError> {
        no()
    }
    async fn exec_start(&self, _: String, _: Option<Io>, _: bool) -> Result<(), ApiError> {
        no()
    }
    async fn exec_inspect(&self, _: &str) -> Result<crate::containers::ExecInspect, ApiError> {
        no()
    }
    async fn exec_resize(&self, _: &str, _: u16, _: u16) -> Result<(), ApiError> {
        no()
    }
}

#[async_trait::async_trait]
impl Images for Null {
    async fn list(&self, _: bool, _: Filters, _: bool) -> Result<Vec<berth_models::images::ImageSummary>, ApiError> {
        no()
    }
    async fn inspect(&self, _: &str) -> Result<berth_models::images::ImageInspect, ApiError> {
        no()
    }
    async fn history(&self, _: &str) -> Result<Vec<berth_models::images::HistoryItem>, ApiError> {
        no()
    }
    async fn tag(&self, _: &str, _: &str, _: &str) -> Result<(), ApiError> {
        no()
    }
    async fn remove(&self, _: &str, _: bool, _: bool) -> Result<Vec<berth_models::images::DeleteItem>, ApiError> {
        no()
    }
    async fn import(&self, _: ByteStream, _: Option<String>, _: Option<String>, _: String, _: Vec<String>) -> Result<String, ApiError> {
        no()
    }
    async fn save(&self, _: Vec<String>) -> Result<ByteStream, ApiError> {
        no()
    }
    async fn load(&self, _: ByteStream) -> Result<Vec<String>, ApiError> {
        no()
    }
    async fn push(
        &self,
        _: &str,
        _: Option<&str>,
        _: Option<berth_models::system::AuthConfig>,
    ) -> Result<crate::images::MessageStream, ApiError> {
        no()
    }
    async fn search(&self, _: &str, _: u32) -> Result<Vec<berth_models::images::SearchResult>, ApiError> {
        no()
    }
    async fn distribution(
        &self,
        _: &str,
        _: Option<berth_models::system::AuthConfig>,
    ) -> Result<berth_models::distribution::DistributionInspect, ApiError> {
        no()
    }
    async fn login(&self, _: berth_models::system::AuthConfig) -> Result<berth_models::system::AuthResponse, ApiError> {
        no()
    }
    async fn pull(
        &self,
        _: &str,
        _: Option<&str>,
        _: Option<&str>,
        _: Option<berth_models::system::AuthConfig>,
    ) -> Result<crate::images::MessageStream, ApiError> {
        no()
    }
    async fn prune(&self, _: Filters) -> Result<berth_models::images::PruneResponse, ApiError> {
        no()
    }
}

#[async_trait::async_trait]
impl crate::networks::Networks for Null {
    async fn list(&self, _: Filters) -> Result<Vec<berth_models::networks::Network>, ApiError> {
        no()
    }
    async fn inspect(&self, _: &str) -> Result<berth_models::networks::Network, ApiError> {
        no()
    }
    async fn create(
        &self,
        _: berth_models::networks::NetworkCreateRequest,
    ) -> Result<berth_models::networks::NetworkCreateResponse, ApiError> {
        no()
    }
    async fn remove(&self, _: &str) -> Result<(), ApiError> {
        no()
    }
    async fn connect(&self, _: &str, _: berth_models::networks::NetworkConnectRequest) -> Result<(), ApiError> {
        no()
    }
    async fn disconnect(&self, _: &str, _: berth_models::networks::NetworkDisconnectRequest) -> Result<(), ApiError> {
        no()
    }
    async fn prune(&self, _: Filters) -> Result<berth_models::networks::NetworkPruneResponse, ApiError> {
        no()
    }
}

#[async_trait::async_trait]
impl crate::volumes::Volumes for Null {
    async fn list(&self, _: Filters) -> Result<berth_models::volumes::VolumeListResponse, ApiError> {
        no()
    }
    async fn inspect(&self, _: &str) -> Result<berth_models::volumes::Volume, ApiError> {
        no()
    }
    async fn create(&self, _: berth_models::volumes::VolumeCreateRequest) -> Result<berth_models::volumes::Volume, ApiError> {
        no()
    }
    async fn remove(&self, _: &str, _: bool) -> Result<(), ApiError> {
        no()
    }
    async fn prune(&self, _: Filters) -> Result<berth_models::volumes::VolumePruneResponse, ApiError> {
        no()
    }
}

#[async_trait::async_trait]
impl crate::build::Builds for Null {
    async fn build(&self, _: crate::build::BuildOptions, _: crate::params::ByteStream) -> Result<crate::images::MessageStream, ApiError> {
        no()
    }
    async fn prune(&self, _: bool, _: Filters) -> Result<berth_models::build::BuildPruneResponse, ApiError> {
        no()
    }
    async fn context_manifest(&self, _: &str) -> Result<serde_json::Value, ApiError> {
        no()
    }
}

#[async_trait::async_trait]
impl crate::events::Events for Null {
    async fn events(&self, _: Option<f64>, _: Option<f64>) -> Result<crate::events::EventStream, ApiError> {
        no()
    }
}
