//! The S3 backend (`s3://bucket/prefix`): the only module that touches AWS SDK types.
//! (Being implemented; see the store module docs for the invariants it must keep.)

use bytes::Bytes;

use super::{ByteStream, Error, Metadata, ObjectMeta, ObjectStore};
use crate::config::S3Settings;

/// A repository in an S3 bucket.
#[derive(Debug)]
pub struct S3Store {
    bucket: String,
    prefix: String,
}

impl S3Store {
    /// Builds the client from the standard AWS credential chain and `[storage.s3]`.
    pub async fn connect(
        bucket: &str,
        prefix: &str,
        _settings: &S3Settings,
    ) -> Result<Self, Error> {
        Err(Error::Url {
            url: format!("s3://{bucket}/{prefix}"),
            message: "S3 support is not built yet".into(),
        })
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
    async fn put_stream(
        &self,
        key: &str,
        _body: ByteStream,
        _meta: Metadata,
    ) -> Result<u64, Error> {
        Err(Error::NotFound {
            key: key.into(),
            store: self.describe(),
        })
    }
    async fn put_if_absent(
        &self,
        key: &str,
        _bytes: Bytes,
        _meta: Metadata,
    ) -> Result<bool, Error> {
        Err(Error::NotFound {
            key: key.into(),
            store: self.describe(),
        })
    }
    async fn get_stream(&self, key: &str) -> Result<ByteStream, Error> {
        Err(Error::NotFound {
            key: key.into(),
            store: self.describe(),
        })
    }
    async fn head(&self, _key: &str) -> Result<Option<(ObjectMeta, Metadata)>, Error> {
        Ok(None)
    }
    async fn list(&self, _prefix: &str) -> Result<Vec<ObjectMeta>, Error> {
        Ok(Vec::new())
    }
    async fn delete(&self, _key: &str) -> Result<(), Error> {
        Ok(())
    }
}
