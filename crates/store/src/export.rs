//! `docker save` and `docker load`. Save writes what Docker 25+ writes: a docker-archive
//! (`manifest.json`) that is also an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/…`), so both Docker-style and OCI tools read it. Load reads either form,
//! including older archives (`<id>.json`, `<dir>/layer.tar`, symlinked duplicate layers).
//!
//! A loaded archive is hostile input: its files only ever land in the content store by digest
//! (names are never used as paths), blobs named by digest must hash to it, metadata files are
//! size-bounded, and every layer's uncompressed stream must match its config's diffID.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::ArchiveError;
use crate::content::ContentError;
use crate::digest::Digest;
use crate::image::{self, Descriptor, ImageConfig, Index, Manifest};
use crate::images::{ImageStore, ImagesError, LayerRecord};
use crate::reference::Reference;

type Result<T> = std::result::Result<T, ImagesError>;

const MAX_METADATA: u64 = 4 << 20;

fn read_err(e: io::Error) -> ImagesError {
    ImagesError::Archive(ArchiveError::Read(e))
}

fn bad(msg: String) -> ImagesError {
    ImagesError::BadArchive(msg)
}

/// One entry of docker-archive's manifest.json.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn oci_layer_type(docker: &str) -> &'static str {
    match docker {
        image::MEDIA_DOCKER_LAYER_GZIP | image::MEDIA_OCI_LAYER_GZIP => image::MEDIA_OCI_LAYER_GZIP,
        image::MEDIA_OCI_LAYER_ZSTD => image::MEDIA_OCI_LAYER_ZSTD,
        _ => image::MEDIA_OCI_LAYER,
    }
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, data: impl Read, size: u64) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    tar.append_data(&mut h, name, data).map_err(read_err)
}

/// Write `names` (references or IDs) to `out` as one archive.
pub fn save<W: Write>(store: &ImageStore, names: &[String], out: W) -> Result<W> {
    let mut tar = tar::Builder::new(out);
    let mut written: BTreeSet<Digest> = BTreeSet::new();
    let mut archive_manifest = Vec::new();
    let mut index = Vec::new();
    for name in names {
        let id = store.resolve(name)?;
        let img = store.get(&id)?;
        let (config_raw, _) = store.config(&id)?;
        let tag = Reference::parse(name).ok().filter(|_| !name.starts_with("sha256:") && !id.hex().starts_with(name));
        let mut blob = |d: &Digest, tar: &mut tar::Builder<W>| -> Result<()> {
            if written.insert(d.clone()) {
                let size = store.content.info(d)?;
                append(tar, &format!("blobs/sha256/{}", d.hex()), store.content.open_blob(d)?, size)?;
            }
            Ok(())
        };
        blob(&id, &mut tar)?;
        let mut layers = Vec::new();
        for l in &img.layers {
            store.ensure_layer_blob(l)?;
            blob(&l.blob, &mut tar)?;
            layers.push(Descriptor {
                media_type: oci_layer_type(&l.media_type).into(),
                digest: l.blob.clone(),
                size: store.content.info(&l.blob)?,
                platform: None,
                annotations: Default::default(),
                urls: Vec::new(),
            });
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(image::MEDIA_OCI_MANIFEST.into()),
            config: Descriptor {
                media_type: image::MEDIA_OCI_CONFIG.into(),
                digest: id.clone(),
                size: config_raw.len() as u64,
                platform: None,
                annotations: Default::default(),
                urls: Vec::new(),
            },
            layers,
            annotations: Default::default(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| ImagesError::Image(image::ImageError::BadManifest(e)))?;
        let manifest_digest = Digest::of(&manifest_bytes);
        if written.insert(manifest_digest.clone()) {
            append(&mut tar, &format!("blobs/sha256/{}", manifest_digest.hex()), &manifest_bytes[..], manifest_bytes.len() as u64)?;
        }
        let mut annotations = BTreeMap::new();
        if let Some(t) = &tag {
            annotations.insert("io.containerd.image.name".to_string(), t.to_string());
            if let Some(tg) = t.tag() {
                annotations.insert("org.opencontainers.image.ref.name".to_string(), tg.to_string());
            }
        }
        index.push(Descriptor {
            media_type: image::MEDIA_OCI_MANIFEST.into(),
            digest: manifest_digest,
            size: manifest_bytes.len() as u64,
            platform: None,
            annotations,
            urls: Vec::new(),
        });
        archive_manifest.push(ArchiveManifest {
            config: format!("blobs/sha256/{}", id.hex()),
            repo_tags: tag.map(|t| vec![t.familiar()]),
            layers: img.layers.iter().map(|l| format!("blobs/sha256/{}", l.blob.hex())).collect(),
        });
    }
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    append(&mut tar, "oci-layout", &layout[..], layout.len() as u64)?;
    let index = Index { schema_version: 2, media_type: Some(image::MEDIA_OCI_INDEX.into()), manifests: index };
    let index_bytes = serde_json::to_vec(&index).map_err(|e| ImagesError::Image(image::ImageError::BadManifest(e)))?;
    append(&mut tar, "index.json", &index_bytes[..], index_bytes.len() as u64)?;
    let m = serde_json::to_vec(&archive_manifest).map_err(|e| ImagesError::Image(image::ImageError::BadManifest(e)))?;
    append(&mut tar, "manifest.json", &m[..], m.len() as u64)?;
    tar.into_inner().map_err(read_err)
}

/// A path inside the archive, normalised; `..` and absolute names are refused.
fn archive_path(raw: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(bad(format!("archive entry {} leaves the archive", raw.display()))),
        }
    }
    Ok(out)
}

/// Load every image in the archive; returns each image's ID and the references it was given.
pub fn load(store: &ImageStore, input: impl Read) -> Result<Vec<(Digest, Vec<Reference>)>> {
    let _writing = store.write_guard();
    let mut stored = Vec::new();
    let result = load_inner(store, input, &mut stored);
    // Whatever this load stored that no image references now (the archive's own manifest and
    // index files, or everything after a failure) goes, unless another load holds it too.
    let dropped = store.drop_unreferenced(&stored);
    let loaded = result?;
    dropped?;
    Ok(loaded)
}

/// Load an OCI image layout directory (what `skopeo copy … oci:DIR` writes), or an extracted
/// docker-archive: the directory is streamed as a tar through the same checks as [`load`].
pub fn load_dir(store: &ImageStore, dir: &Path) -> Result<Vec<(Digest, Vec<Reference>)>> {
    if !dir.is_dir() {
        return Err(bad(format!("{} is not a directory", dir.display())));
    }
    let root = dir.to_path_buf();
    let mut stream = crate::archive::Pipeline::start(move |w| {
        let mut b = tar::Builder::new(w);
        // Links stay links: the loader resolves them inside the archive, never on the host.
        b.follow_symlinks(false);
        b.append_dir_all(".", &root)?;
        b.finish()
    });
    let loaded = load(store, &mut stream)?;
    stream.finish().map_err(read_err)?;
    Ok(loaded)
}

fn load_inner(store: &ImageStore, input: impl Read, stored: &mut Vec<crate::content::Held>) -> Result<Vec<(Digest, Vec<Reference>)>> {
    let input = crate::archive::decompress(input).map_err(read_err)?;
    let mut files: HashMap<PathBuf, Digest> = HashMap::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut archive = tar::Archive::new(input);
    for (n, entry) in archive.entries().map_err(read_err)?.enumerate() {
        let mut entry = entry.map_err(read_err)?;
        let path = archive_path(&entry.path().map_err(read_err)?)?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut w = store.content.writer(&format!("load-{}-{n}", crate::owner::me()), None)?;
                io::copy(&mut entry, &mut w).map_err(read_err)?;
                let digest = w.commit()?;
                stored.push(store.content.hold(&digest));
                // A blob named by its digest must be that blob.
                if let Some(hex) = path.strip_prefix("blobs/sha256").ok().and_then(|p| p.to_str())
                    && hex != digest.hex()
                {
                    return Err(ImagesError::Content(ContentError::DigestMismatch {
                        expected: format!("sha256:{hex}").parse().map_err(|_| bad(format!("bad blob name {}", path.display())))?,
                        actual: digest,
                    }));
                }
                files.insert(path, digest);
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry.link_name().map_err(read_err)?.ok_or_else(|| bad(format!("link {} has no target", path.display())))?;
                // Old docker save links duplicate layers relative to the link's directory.
                let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                    path.parent().unwrap_or(Path::new("")).join(&target)
                } else {
                    target.to_path_buf()
                };
                links.push((path, base));
            }
            _ => {}
        }
    }
    for (link, target) in links {
        let mut resolved = PathBuf::new();
        for c in target.components() {
            match c {
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(n) => resolved.push(n),
                _ => {}
            }
        }
        if let Some(d) = files.get(&resolved).cloned() {
            files.insert(link, d);
        }
    }
    let get = |name: &str| -> Result<Digest> {
        let p = archive_path(Path::new(name))?;
        files.get(&p).cloned().ok_or_else(|| bad(format!("the archive's manifest names {name}, which it does not contain")))
    };

    // (config, layer blobs, tags) per image, from manifest.json, else from index.json.
    let mut images: Vec<(Digest, Vec<Digest>, Vec<Reference>)> = Vec::new();
    if let Ok(m) = get("manifest.json") {
        let entries: Vec<ArchiveManifest> = serde_json::from_slice(&store.content.read(&m, MAX_METADATA)?)
            .map_err(|e| ImagesError::Image(image::ImageError::BadManifest(e)))?;
        for e in entries {
            let layers = e.layers.iter().map(|l| get(l)).collect::<Result<Vec<_>>>()?;
            let tags = e.repo_tags.unwrap_or_default().iter().map(|t| Reference::parse(t)).collect::<std::result::Result<Vec<_>, _>>()?;
            images.push((get(&e.config)?, layers, tags));
        }
    } else if let Ok(i) = get("index.json") {
        let index = Index::parse(&store.content.read(&i, MAX_METADATA)?)?;
        for d in &index.manifests {
            let m = Manifest::parse(&store.content.read(&d.digest, MAX_METADATA)?)?;
            // containerd's full name; else the OCI ref name when it is a whole reference
            // (skopeo's oci-archive writes one) rather than a bare tag.
            let name = d
                .annotations
                .get("io.containerd.image.name")
                .or_else(|| d.annotations.get("org.opencontainers.image.ref.name").filter(|n| n.contains('/') || n.contains(':')));
            let tags = name.map(|n| Reference::parse(n)).transpose()?.into_iter().collect();
            images.push((m.config.digest.clone(), m.layers.iter().map(|l| l.digest.clone()).collect(), tags));
        }
    } else {
        return Err(bad("neither manifest.json nor index.json: not an image archive".into()));
    }

    let mut out = Vec::new();
    for (config_digest, blobs, tags) in images {
        let config_raw = store.content.read(&config_digest, MAX_METADATA)?;
        let config = ImageConfig::parse(&config_raw)?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != blobs.len() {
            return Err(ImagesError::Image(image::ImageError::LayerCount { config: diff_ids.len(), manifest: blobs.len() }));
        }
        if blobs.len() > crate::snapshot::MAX_LAYER_DEPTH {
            return Err(ImagesError::Snapshot(crate::snapshot::SnapshotError::TooDeep(blobs.len())));
        }
        let chain = image::chain_ids(diff_ids);
        let mut layers = Vec::new();
        for (i, blob) in blobs.iter().enumerate() {
            let parent = i.checked_sub(1).map(|p| &chain[p]);
            let size = store.unpack(parent, &chain[i], blob, Some(&diff_ids[i]))?;
            let mut magic = [0u8; 2];
            let gz = store.content.open_blob(blob)?.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
            layers.push(LayerRecord {
                diff_id: diff_ids[i].clone(),
                chain_id: chain[i].clone(),
                blob: blob.clone(),
                media_type: if gz { image::MEDIA_DOCKER_LAYER_GZIP } else { image::MEDIA_DOCKER_LAYER }.into(),
                size: size.unwrap_or_else(|| store.content.info(blob).unwrap_or(0)),
            });
        }
        let id = store.record(config_raw, layers, None)?;
        for t in &tags {
            store.tag(&id.to_string(), t)?;
        }
        out.push((id, tags));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::Driver;
    use crate::test_support::{have, root_or_skip, rootfs_tar};
    use std::fs;
    use std::process::Command;

    fn store_with_image(t: &Path) -> (ImageStore, Digest) {
        let s = ImageStore::open(&t.join("a"), Driver::Overlay).unwrap();
        let id = s.import(&rootfs_tar("saved")[..], Some(&Reference::parse("busybox").unwrap()), "", Default::default()).unwrap();
        (s, id)
    }

    fn marker(s: &ImageStore, name: &str) -> String {
        let img = s.get(&s.resolve(name).unwrap()).unwrap();
        let dir = s.snapshots.dir(&img.layers.last().unwrap().chain_id.to_string()).unwrap();
        fs::read_to_string(dir.join("etc/marker")).unwrap()
    }

    #[test]
    fn save_then_load_gives_the_same_image() {
        if !root_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (a, id) = store_with_image(t.path());
        let archive = save(&a, &["busybox".to_string()], Vec::new()).unwrap();
        let b = ImageStore::open(&t.path().join("b"), Driver::Vfs).unwrap();
        let loaded = load(&b, &archive[..]).unwrap();
        assert_eq!(loaded[0].0, id, "same config bytes, same ID");
        assert_eq!(loaded[0].1[0].familiar(), "busybox:latest");
        assert_eq!(marker(&b, "busybox"), "saved");
        // The archive's own files (manifest.json, index.json, its OCI manifest) are not kept.
        let img = b.get(&id).unwrap();
        let mut kept: Vec<Digest> = b.content.list().unwrap().into_iter().map(|(d, _)| d).collect();
        let mut wanted = vec![img.id.clone(), img.manifest.clone(), img.layers[0].blob.clone()];
        kept.sort();
        wanted.sort();
        assert_eq!(kept, wanted);
        assert!(b.content.ingests().unwrap().is_empty());
    }

    #[test]
    fn skopeo_reads_our_archives_and_we_read_skopeos() {
        if !root_or_skip() || !have("skopeo") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (a, id) = store_with_image(t.path());
        let ours = t.path().join("ours.tar");
        fs::write(&ours, save(&a, &["busybox".to_string()], Vec::new()).unwrap()).unwrap();
        let out = Command::new("skopeo").arg("inspect").arg("--raw").arg(format!("docker-archive:{}", ours.display())).output().unwrap();
        assert!(out.status.success(), "skopeo inspect: {}", String::from_utf8_lossy(&out.stderr));
        for (dest, file) in [("oci-archive", "theirs-oci.tar"), ("docker-archive", "theirs-docker.tar")] {
            let theirs = t.path().join(file);
            let out = Command::new("skopeo")
                .args(["copy", "--quiet"])
                .arg(format!("docker-archive:{}", ours.display()))
                .arg(format!("{dest}:{}:docker.io/library/busybox:copied", theirs.display()))
                .output()
                .unwrap();
            assert!(out.status.success(), "skopeo copy to {dest}: {}", String::from_utf8_lossy(&out.stderr));
            let b = ImageStore::open(&t.path().join(format!("b-{dest}")), Driver::Overlay).unwrap();
            let loaded = load(&b, fs::File::open(&theirs).unwrap()).unwrap();
            if dest == "docker-archive" {
                assert_eq!(loaded[0].0, id, "{dest}: the config survives skopeo byte for byte");
            } else {
                // Converting to OCI, skopeo rewrites the config; the layers stay the same.
                assert_eq!(b.config(&loaded[0].0).unwrap().1.rootfs, a.config(&id).unwrap().1.rootfs, "{dest}");
            }
            assert_eq!(marker(&b, "busybox:copied"), "saved", "{dest}");
        }
    }

    #[test]
    fn loads_an_oci_layout_directory_from_skopeo() {
        if !root_or_skip() || !have("skopeo") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (a, _) = store_with_image(t.path());
        let ours = t.path().join("ours.tar");
        fs::write(&ours, save(&a, &["busybox".to_string()], Vec::new()).unwrap()).unwrap();
        let dir = t.path().join("oci-dir");
        let out = Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("docker-archive:{}", ours.display()))
            .arg(format!("oci:{}:docker.io/library/busybox:dir", dir.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo copy to oci: {}", String::from_utf8_lossy(&out.stderr));
        let b = ImageStore::open(&t.path().join("b"), Driver::Overlay).unwrap();
        let loaded = load_dir(&b, &dir).unwrap();
        assert_eq!(loaded[0].1[0].to_string(), "docker.io/library/busybox:dir");
        assert_eq!(marker(&b, "busybox:dir"), "saved");
        assert!(load_dir(&b, &t.path().join("missing")).is_err());
    }

    #[test]
    fn umoci_unpacks_our_oci_layout() {
        if !root_or_skip() || !have("umoci") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (a, _) = store_with_image(t.path());
        let layout = t.path().join("layout");
        fs::create_dir(&layout).unwrap();
        tar::Archive::new(&save(&a, &["busybox".to_string()], Vec::new()).unwrap()[..]).unpack(&layout).unwrap();
        let bundle = t.path().join("bundle");
        let out =
            Command::new("umoci").arg("unpack").arg("--image").arg(format!("{}:latest", layout.display())).arg(&bundle).output().unwrap();
        assert!(out.status.success(), "umoci unpack: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(fs::read_to_string(bundle.join("rootfs/etc/marker")).unwrap(), "saved");
    }

    /// Rewrite an archive: `f` maps each file to new content (or drops it); `extra` is appended.
    fn tamper(archive: &[u8], f: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>, extra: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut out = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            out.append_data(&mut h, name, data).unwrap();
        };
        for e in tar::Archive::new(archive).entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            if let Some(data) = f(&name, data) {
                add(&name, &data);
            }
        }
        for (name, data) in extra {
            add(name, data);
        }
        out.into_inner().unwrap()
    }

    #[test]
    fn hostile_archives_are_refused_and_leave_nothing() {
        if !root_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (a, id) = store_with_image(t.path());
        let good = save(&a, &["busybox".to_string()], Vec::new()).unwrap();
        let layer_hex = a.get(&id).unwrap().layers[0].blob.hex().to_string();
        let config_name = format!("blobs/sha256/{}", id.hex());
        let evil = rootfs_tar("evil");
        let evil_hex = Digest::of(&evil).hex().to_string();
        let swapped_layer = tamper(&good, |n, d| Some(if n.ends_with(&layer_hex) { evil.clone() } else { d }), &[]);
        let missing_layer = tamper(&good, |n, d| (!n.ends_with(&layer_hex)).then_some(d), &[]);
        // Consistent names and contents, but the layer is not the one the config's diffID names.
        let wrong_diff = tamper(
            &good,
            |n, d| match n {
                _ if n.ends_with(&layer_hex) => None,
                "manifest.json" => Some(String::from_utf8(d).unwrap().replace(&layer_hex, &evil_hex).into_bytes()),
                _ => Some(d),
            },
            &[(format!("blobs/sha256/{evil_hex}"), evil.clone())],
        );
        // A config blob whose name matches its content, but the content is not JSON.
        let junk = b"{not json".to_vec();
        let junk_hex = Digest::of(&junk).hex().to_string();
        let not_json = tamper(
            &good,
            |n, d| match n {
                _ if n == config_name => None,
                "manifest.json" => Some(String::from_utf8(d).unwrap().replace(id.hex(), &junk_hex).into_bytes()),
                _ => Some(d),
            },
            &[(format!("blobs/sha256/{junk_hex}"), junk.clone())],
        );
        // 126 layers: one more than Docker allows.
        let too_deep = {
            let layers: Vec<Vec<u8>> = (0..126).map(|i| rootfs_tar(&format!("layer {i}"))).collect();
            let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
            let config = serde_json::to_vec(
                &serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}),
            )
            .unwrap();
            let config_hex = Digest::of(&config).hex().to_string();
            let manifest =
                serde_json::to_vec(&serde_json::json!([{"Config": format!("blobs/sha256/{config_hex}"), "RepoTags": ["deep:latest"],
                "Layers": layers.iter().map(|l| format!("blobs/sha256/{}", Digest::of(l).hex())).collect::<Vec<_>>()}]))
                .unwrap();
            let mut files: Vec<(String, Vec<u8>)> =
                layers.iter().map(|l| (format!("blobs/sha256/{}", Digest::of(l).hex()), l.clone())).collect();
            files.push((format!("blobs/sha256/{config_hex}"), config));
            files.push(("manifest.json".to_string(), manifest));
            tamper(&tar::Builder::new(Vec::new()).into_inner().unwrap(), |_, d| Some(d), &files)
        };
        let escape = {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..11].copy_from_slice(b"../evil.txt");
            h.set_size(1);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
            b.into_inner().unwrap()
        };
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("blob renamed", swapped_layer, "digest mismatch"),
            ("layer missing", missing_layer, "does not contain"),
            ("layer does not match its diffID", wrong_diff, "digest mismatch"),
            ("config not JSON", not_json, "image config is not valid JSON"),
            ("126 layers", too_deep, "deeper than the limit of 125"),
            ("path escape", escape, "leaves the archive"),
            ("not an archive", b"garbage".repeat(100), ""),
        ];
        for (what, archive, needle) in cases {
            let b = ImageStore::open(&t.path().join(format!("b-{}", what.replace(' ', "-"))), Driver::Overlay).unwrap();
            let err = load(&b, &archive[..]).expect_err(what).to_string();
            assert!(err.contains(needle), "{what}: {err}");
            assert!(b.list().unwrap().is_empty(), "{what}: an image was recorded");
            assert!(b.snapshots.walk().unwrap().is_empty(), "{what}: a snapshot was left");
            assert!(b.content.list().unwrap().is_empty(), "{what}: blobs were left");
            assert!(!t.path().join("evil.txt").exists());
        }
    }
}

#[cfg(test)]
mod docker_tests {
    //! Against the real Docker: the isolated peer dockerd scripts/test.sh starts
    //! (`$BERTH_PEER_DOCKER_HOST`, scripts/peer-dockerd.sh); skips with a message without one,
    //! fails under CI.
    use super::*;
    use crate::images::Driver;
    use crate::test_support::root_or_skip;
    use std::process::Command;

    /// The isolated peer dockerd scripts/test.sh starts (`$BERTH_PEER_DOCKER_HOST`).
    fn docker_or_skip() -> bool {
        if !root_or_skip() {
            return false;
        }
        if std::env::var("BERTH_PEER_DOCKER_HOST").is_ok_and(|h| !h.is_empty()) {
            return true;
        }
        assert!(!crate::test_support::in_ci(), "no peer dockerd: scripts/test.sh starts one, and CI must run this test");
        crate::test_support::skip("no peer dockerd to compare with (scripts/test.sh starts one: scripts/peer-dockerd.sh)");
        false
    }

    fn docker(args: &[&str]) -> std::process::Output {
        let host = std::env::var("BERTH_PEER_DOCKER_HOST").unwrap_or_default();
        let out = Command::new("docker").env("DOCKER_HOST", host).args(args).output().unwrap();
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    #[test]
    fn loads_what_docker_saves_and_docker_loads_what_we_save() {
        if !docker_or_skip() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(6);
        h.set_mode(0o644);
        b.append_data(&mut h, "etc/marker", &b"docker"[..]).unwrap();
        let rootfs = t.path().join("rootfs.tar");
        std::fs::write(&rootfs, b.into_inner().unwrap()).unwrap();
        let tag = format!("berth-interop-{}:v1", std::process::id());
        docker(&["import", rootfs.to_str().unwrap(), &tag]);
        let saved = t.path().join("docker-saved.tar");
        docker(&["save", "-o", saved.to_str().unwrap(), &tag]);
        let docker_id = String::from_utf8(docker(&["image", "inspect", "--format", "{{.Id}}", &tag]).stdout).unwrap();

        let s = ImageStore::open(&t.path().join("store"), Driver::Overlay).unwrap();
        let loaded = load(&s, std::fs::File::open(&saved).unwrap()).unwrap();
        assert_eq!(loaded[0].0.to_string(), docker_id.trim(), "the same image ID as Docker's");
        assert_eq!(s.resolve(&tag).unwrap(), loaded[0].0);

        docker(&["rmi", &tag]);
        let ours = t.path().join("ours.tar");
        std::fs::write(&ours, save(&s, std::slice::from_ref(&tag), Vec::new()).unwrap()).unwrap();
        docker(&["load", "-i", ours.to_str().unwrap()]);
        let reloaded = String::from_utf8(docker(&["image", "inspect", "--format", "{{.Id}}", &tag]).stdout).unwrap();
        assert_eq!(reloaded.trim(), docker_id.trim());
        docker(&["rmi", &tag]);
    }
}
