//! [`S3StorageBuilder`]: bucket, prefix, endpoint and credentials; it
//! builds an [`S3Storage`].

use crate::{from_store, S3Storage};
use chatvault_core::{Error, Result};
use chatvault_object_store::ObjectStoreOptions;
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::client::HttpConnector;
use std::sync::Arc;

/// Configures an [`S3Storage`].
///
/// Starts from the `AWS_*` environment ([`S3StorageBuilder::from_env`]) or
/// from nothing ([`S3StorageBuilder::new`]); every `with_` call overrides.
/// Conditional puts (`If-None-Match: *`) are always on: the layout's commit
/// point needs them.
#[derive(Debug)]
pub struct S3StorageBuilder {
    s3: AmazonS3Builder,
    bucket: Option<String>,
    prefix: String,
    options: ObjectStoreOptions,
}

impl Default for S3StorageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl S3StorageBuilder {
    /// A builder with nothing configured (region `us-east-1`).
    pub fn new() -> Self {
        Self::wrap(AmazonS3Builder::new())
    }

    /// A builder seeded from the environment as the AWS tools read it:
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_REGION` / `AWS_DEFAULT_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`,
    /// `AWS_BUCKET`, and the container/instance credential variables.
    pub fn from_env() -> Self {
        let s3 = AmazonS3Builder::from_env();
        let mut builder = Self::wrap(s3);
        builder.bucket = std::env::var("AWS_BUCKET")
            .or_else(|_| std::env::var("AWS_BUCKET_NAME"))
            .ok()
            .filter(|b| !b.is_empty());
        builder
    }

    fn wrap(s3: AmazonS3Builder) -> Self {
        Self {
            s3: s3.with_conditional_put(S3ConditionalPut::ETagMatch),
            bucket: None,
            prefix: String::new(),
            options: ObjectStoreOptions::default(),
        }
    }

    /// The bucket holding the vault.
    pub fn with_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = Some(bucket.into());
        self
    }

    /// The vault's key prefix inside the bucket, e.g. `users/<user id>`.
    /// One prefix holds exactly one vault. Default: the bucket's root.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_matches('/').to_owned();
        self
    }

    /// A custom endpoint (MinIO, R2, Supabase Storage, Ceph…). Requests
    /// become path-style (`<endpoint>/<bucket>/<key>`), which every
    /// S3-compatible server accepts, and an `http://` endpoint allows plain
    /// HTTP.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        let endpoint = endpoint.into();
        let http = endpoint.starts_with("http://");
        self.s3 = self
            .s3
            .with_endpoint(endpoint.trim_end_matches('/'))
            .with_virtual_hosted_style_request(false);
        if http {
            self.s3 = self.s3.with_allow_http(true);
        }
        self
    }

    /// The signing region (`auto` for R2).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.s3 = self.s3.with_region(region);
        self
    }

    /// Static credentials.
    pub fn with_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.s3 = self
            .s3
            .with_access_key_id(access_key_id)
            .with_secret_access_key(secret_access_key);
        self
    }

    /// A session token for temporary credentials.
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.s3 = self.s3.with_token(token);
        self
    }

    /// Allows (or forbids) plain HTTP. Off by default, on for `http://`
    /// endpoints.
    pub fn with_allow_http(mut self, allow: bool) -> Self {
        self.s3 = self.s3.with_allow_http(allow);
        self
    }

    /// Virtual-hosted-style requests (`<bucket>.<endpoint>/<key>`) instead of
    /// path-style. AWS prefers them; custom endpoints default to path-style.
    pub fn with_virtual_hosted_style(mut self, virtual_hosted: bool) -> Self {
        self.s3 = self.s3.with_virtual_hosted_style_request(virtual_hosted);
        self
    }

    /// Declares whether the server applies `If-None-Match: *` atomically with
    /// the write (default `true`: AWS, MinIO, R2). `false` is reported as
    /// `Capabilities::atomic_preconditions = false`.
    pub fn with_atomic_conditional_put(mut self, atomic: bool) -> Self {
        self.options = self.options.with_atomic_create(atomic);
        self
    }

    /// Layout options: record size limit, batch size, inline summaries,
    /// request concurrency. An earlier
    /// [`S3StorageBuilder::with_atomic_conditional_put`] is replaced.
    pub fn with_options(mut self, options: ObjectStoreOptions) -> Self {
        self.options = options;
        self
    }

    /// A custom HTTP connector (TLS roots, proxies, or a request counter
    /// such as `chatvault_conformance::layers::CountingHttpConnector`).
    pub fn with_http_connector(mut self, connector: impl HttpConnector) -> Self {
        self.s3 = self.s3.with_http_connector(connector);
        self
    }

    /// Any other `object_store` S3 setting (retries, timeouts, checksums,
    /// encryption) on the underlying builder.
    pub fn with_s3(mut self, configure: impl FnOnce(AmazonS3Builder) -> AmazonS3Builder) -> Self {
        self.s3 = configure(self.s3);
        self
    }

    /// Applies `s3://bucket/prefix?endpoint=…&region=…&allow_http=…`.
    pub fn with_url(mut self, url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::invalid(format!("not an s3:// URL: {url:?}: {e}")))?;
        if parsed.scheme() != "s3" {
            return Err(Error::invalid(format!(
                "not an s3:// URL: {url:?} (scheme {:?})",
                parsed.scheme()
            )));
        }
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| Error::invalid(format!("no bucket in {url:?}")))?;
        self = self.with_bucket(bucket).with_prefix(parsed.path());
        for (key, value) in parsed.query_pairs() {
            self = match key.as_ref() {
                "endpoint" => self.with_endpoint(value.as_ref()),
                "region" => self.with_region(value.as_ref()),
                "allow_http" => match value.as_ref() {
                    "true" | "1" => self.with_allow_http(true),
                    "false" | "0" => self.with_allow_http(false),
                    other => {
                        return Err(Error::invalid(format!(
                            "allow_http must be true or false, not {other:?}"
                        )))
                    }
                },
                other => {
                    return Err(Error::invalid(format!(
                        "unknown s3 URL parameter {other:?} (known: endpoint, region, allow_http)"
                    )))
                }
            };
        }
        Ok(self)
    }

    /// The bucket set so far, if any.
    pub fn bucket(&self) -> Option<&str> {
        self.bucket.as_deref()
    }

    /// The vault's key prefix set so far.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The configured `object_store` client, for callers that wrap it before
    /// handing it to [`from_store`](crate::from_store).
    pub fn build_store(&self) -> Result<AmazonS3> {
        let bucket = self
            .bucket
            .as_deref()
            .ok_or_else(|| Error::invalid("no bucket: call with_bucket, or set AWS_BUCKET"))?;
        self.s3
            .clone()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| Error::invalid(format!("bad S3 settings: {e}")))
    }

    /// Builds the storage. Nothing is sent until the first call.
    pub fn build(self) -> Result<S3Storage> {
        let store = self.build_store()?;
        Ok(from_store(Arc::new(store), &self.prefix, self.options))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatvault_core::Storage;

    #[test]
    fn url_sets_bucket_prefix_and_endpoint() {
        let builder = S3StorageBuilder::new()
            .with_credentials("k", "s")
            .with_url("s3://chats/users/alice/?endpoint=http://127.0.0.1:9000&region=eu-west-1")
            .expect("valid URL");
        assert_eq!(builder.bucket(), Some("chats"));
        assert_eq!(builder.prefix(), "users/alice");
        let storage = builder.build().expect("valid settings");
        assert_eq!(storage.prefix().as_ref(), "users/alice");
    }

    #[test]
    fn non_s3_urls_and_unknown_parameters_are_invalid_input() {
        for url in [
            "file:///tmp/x",
            "s3:///no-bucket",
            "s3://b/p?colour=blue",
            "s3://b/p?allow_http=maybe",
            "not a url",
        ] {
            let result = S3StorageBuilder::new().with_url(url);
            assert!(
                matches!(result, Err(Error::InvalidInput { .. })),
                "{url}: {result:?}"
            );
        }
    }

    #[test]
    fn missing_bucket_is_invalid_input() {
        let result = S3StorageBuilder::new().with_prefix("alice").build();
        assert!(
            matches!(result, Err(Error::InvalidInput { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn non_atomic_servers_are_reported_in_capabilities() {
        let storage = S3StorageBuilder::new()
            .with_bucket("b")
            .with_endpoint("http://127.0.0.1:1")
            .with_atomic_conditional_put(false)
            .build()
            .expect("valid settings");
        assert!(!storage.capabilities().atomic_preconditions);
        let atomic = S3StorageBuilder::new()
            .with_bucket("b")
            .build()
            .expect("valid settings");
        assert!(atomic.capabilities().atomic_preconditions);
    }
}
