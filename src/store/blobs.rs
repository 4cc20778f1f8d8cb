//! The bytes of uploaded files, behind `FileStore`: a local directory (the
//! default) or an S3-compatible bucket. Metadata (name, type, size, room)
//! stays in the database; only the bytes live here, keyed by the file id.
//!
//! Uploads are always received into a local temporary file first, so the
//! size limit is enforced while streaming and no half-received upload is
//! ever visible; `put_file` then moves the finished file into the store.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream::BoxStream};
use object_store::{
    ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
    aws::{AmazonS3, AmazonS3Builder},
    path::Path as ObjectPath,
};
use tokio::io::AsyncReadExt;

use crate::config::Config;

/// A stored file's bytes, as a stream.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// A stored file opened for reading.
pub struct OpenedFile {
    pub size: u64,
    pub body: ByteStream,
}

#[async_trait]
pub trait FileStore: Send + Sync + 'static {
    /// Moves the fully received file at `temp` into the store under `id`.
    /// `temp` is gone afterwards when this succeeds.
    async fn put_file(&self, id: &str, temp: &Path) -> anyhow::Result<()>;

    /// The file's size and bytes, or `None` when no file has this id.
    async fn open(&self, id: &str) -> anyhow::Result<Option<OpenedFile>>;

    /// Removes the file; removing a missing file is not an error.
    async fn delete(&self, id: &str) -> anyhow::Result<()>;

    /// The ids of the files stored before `cutoff`, for `mirage check`.
    /// Only names that are file ids (`new_file_id`) are listed: anything
    /// else beside them is not Mirage's to judge.
    async fn stored_before(&self, cutoff: SystemTime) -> anyhow::Result<Vec<String>>;
}

/// A new file's id: random (an upload's URL is its only key), 32
/// lower-case hexadecimal digits.
pub fn new_file_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether `name` has the form of the ids `new_file_id` gives.
fn is_file_id(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The store the configuration names: `--files` unset is the local
/// directory `<data-dir>/files`; `s3://bucket[/prefix]?...` is S3.
pub fn open_file_store(config: &Config) -> anyhow::Result<std::sync::Arc<dyn FileStore>> {
    match config.files.as_deref() {
        None => Ok(std::sync::Arc::new(LocalFiles::new(
            config.data_dir.join("files"),
        )?)),
        Some(url) if url.starts_with("s3://") => Ok(std::sync::Arc::new(S3Files::from_url(url)?)),
        Some(other) => {
            anyhow::bail!("unsupported --files URL {other:?}: expected s3://bucket?endpoint=...")
        }
    }
}

/// Files in a local directory, one per id.
pub struct LocalFiles {
    dir: PathBuf,
}

impl LocalFiles {
    pub fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(LocalFiles { dir })
    }
}

#[async_trait]
impl FileStore for LocalFiles {
    async fn put_file(&self, id: &str, temp: &Path) -> anyhow::Result<()> {
        // The bytes reach the disk before the name does, and the name before
        // the metadata row (committed after this returns) can point at it:
        // after a power loss a file URL never serves a truncated file.
        tokio::fs::File::open(temp).await?.sync_all().await?;
        // The temporary file lives under the same directory: an atomic rename.
        tokio::fs::rename(temp, self.dir.join(id)).await?;
        tokio::fs::File::open(&self.dir).await?.sync_all().await?;
        Ok(())
    }

    async fn open(&self, id: &str) -> anyhow::Result<Option<OpenedFile>> {
        let file = match tokio::fs::File::open(self.dir.join(id)).await {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let size = file.metadata().await?.len();
        Ok(Some(OpenedFile {
            size,
            body: tokio_util::io::ReaderStream::new(file).boxed(),
        }))
    }

    async fn delete(&self, id: &str) -> anyhow::Result<()> {
        match tokio::fs::remove_file(self.dir.join(id)).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }

    async fn stored_before(&self, cutoff: SystemTime) -> anyhow::Result<Vec<String>> {
        let mut found = Vec::new();
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // A file's time is its last byte's: `put_file` renames it.
            let meta = entry.metadata().await?;
            if is_file_id(&name) && meta.is_file() && meta.modified()? < cutoff {
                found.push(name);
            }
        }
        Ok(found)
    }
}

/// Parts of an S3 multipart upload; S3 requires at least 5 MiB for all but
/// the last. Files up to this size are sent with one plain PUT.
const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts in flight at once: memory stays near `PART_SIZE * (this + 1)`.
const PARTS_IN_FLIGHT: usize = 2;

/// Files in an S3-compatible bucket, as objects `<prefix>/<id>`.
pub struct S3Files {
    store: AmazonS3,
    prefix: String,
}

impl S3Files {
    /// Parses `s3://bucket[/prefix][?key=value&...]`. Query keys:
    /// `endpoint` (e.g. `http://127.0.0.1:9000`; plain HTTP is allowed when
    /// the endpoint says so, and the bucket is addressed by path),
    /// `region` (default `us-east-1`), and optionally `access_key_id`,
    /// `secret_access_key`, `session_token`. Credentials not given in the
    /// URL come from the standard AWS environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...).
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| anyhow::anyhow!("an S3 files URL starts with s3://"))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        anyhow::ensure!(!bucket.is_empty(), "the files URL {url:?} names no bucket");
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region("us-east-1");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|err| anyhow::anyhow!("bad query in files URL: {err}"))?;
        for (key, value) in pairs {
            builder = match key.as_str() {
                "endpoint" => {
                    let builder = if value.starts_with("http://") {
                        builder.with_allow_http(true)
                    } else {
                        builder
                    };
                    builder
                        .with_endpoint(value)
                        .with_virtual_hosted_style_request(false)
                }
                "region" => builder.with_region(value),
                "access_key_id" => builder.with_access_key_id(value),
                "secret_access_key" => builder.with_secret_access_key(value),
                "session_token" => builder.with_token(value),
                other => anyhow::bail!(
                    "unknown key {other:?} in files URL: expected endpoint, region, \
                     access_key_id, secret_access_key or session_token"
                ),
            };
        }
        Ok(S3Files {
            store: builder.build()?,
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    fn path(&self, id: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(id)
        } else {
            ObjectPath::from(format!("{}/{id}", self.prefix))
        }
    }

    /// Streams the file into a multipart upload, a few parts at a time.
    async fn upload_parts(
        &self,
        path: &ObjectPath,
        mut file: tokio::fs::File,
    ) -> anyhow::Result<()> {
        let upload = self.store.put_multipart(path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; 256 * 1024];
        let sent: anyhow::Result<()> = async {
            loop {
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                writer.write(&buf[..n]);
            }
        }
        .await;
        match sent {
            Ok(()) => {
                writer.finish().await?;
                Ok(())
            }
            Err(err) => {
                let _ = writer.abort().await;
                Err(err)
            }
        }
    }
}

#[async_trait]
impl FileStore for S3Files {
    async fn put_file(&self, id: &str, temp: &Path) -> anyhow::Result<()> {
        let mut file = tokio::fs::File::open(temp).await?;
        let size = file.metadata().await?.len();
        let path = self.path(id);
        if size <= PART_SIZE as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).await?;
            self.store.put(&path, PutPayload::from(bytes)).await?;
        } else {
            self.upload_parts(&path, file).await?;
        }
        tokio::fs::remove_file(temp).await?;
        Ok(())
    }

    async fn open(&self, id: &str) -> anyhow::Result<Option<OpenedFile>> {
        let got = match self.store.get(&self.path(id)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let size = got.meta.size;
        Ok(Some(OpenedFile {
            size,
            body: got.into_stream().map_err(std::io::Error::other).boxed(),
        }))
    }

    async fn delete(&self, id: &str) -> anyhow::Result<()> {
        match self.store.delete(&self.path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    async fn stored_before(&self, cutoff: SystemTime) -> anyhow::Result<Vec<String>> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let mut objects = self.store.list(prefix.as_ref());
        let mut found = Vec::new();
        while let Some(object) = objects.try_next().await? {
            let Some(name) = object.location.filename() else {
                continue;
            };
            // Directly under the prefix, not in a "directory" below it.
            if is_file_id(name)
                && object.location == self.path(name)
                && SystemTime::from(object.last_modified) < cutoff
            {
                found.push(name.to_owned());
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_parse() {
        let files = S3Files::from_url(
            "s3://bucket/some/prefix/?endpoint=http://127.0.0.1:9000&region=eu-west-1\
             &access_key_id=a&secret_access_key=b",
        )
        .unwrap();
        assert_eq!(files.path("abc").as_ref(), "some/prefix/abc");
        let files = S3Files::from_url("s3://bucket?endpoint=http://127.0.0.1:9000").unwrap();
        assert_eq!(files.path("abc").as_ref(), "abc");
        assert!(S3Files::from_url("s3://?endpoint=http://x").is_err());
        assert!(S3Files::from_url("s3://b?colour=blue").is_err());
    }

    #[tokio::test]
    async fn local_files_move_stream_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(dir.path().join("files")).unwrap();
        let temp = dir.path().join("upload");
        std::fs::write(&temp, b"hello").unwrap();
        files.put_file("id1", &temp).await.unwrap();
        assert!(!temp.exists());
        let opened = files.open("id1").await.unwrap().unwrap();
        assert_eq!(opened.size, 5);
        let bytes: Vec<Bytes> = opened.body.try_collect().await.unwrap();
        assert_eq!(bytes.concat(), b"hello");
        files.delete("id1").await.unwrap();
        files.delete("id1").await.unwrap();
        assert!(files.open("id1").await.unwrap().is_none());
    }
}
