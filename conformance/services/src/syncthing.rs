//! Syncthing fixture: N real `syncthing` processes on loopback sharing one
//! folder, to test what a vault folder synced by a file-sync service goes
//! through (delayed copies, conflict copies, devices going offline).
//!
//! [`SyncthingCluster::start`] makes, under one temporary directory, for each
//! device `i`: a home `home<i>` (keys from `syncthing generate`, then a
//! `config.xml` written by this fixture), a folder `folder<i>` (with the
//! `.stfolder` marker Syncthing requires) and a log file `syncthing<i>.log`.
//! It then runs `syncthing serve --home=… --no-browser --no-restart
//! --no-upgrade` for each device. Every device:
//!
//! - listens for the sync protocol on `tcp://127.0.0.1:<free port>` only;
//!   device `i` knows every device `j < i` by that static address and the
//!   others as `dynamic` (which nothing resolves, discovery being off), so
//!   of each pair only the higher-numbered device dials and the other
//!   accepts. When two devices dial each other at the same moment (both
//!   starting, or both resuming), Syncthing 1.19 can stall 20 s on a Hello
//!   timeout before a connection holds; this fixture's tests hit it;
//! - serves its GUI/REST API on `http://127.0.0.1:<free port>` with a random
//!   API key (sent as `X-API-Key`);
//! - has global discovery, local discovery, relays, NAT traversal, STUN,
//!   usage reporting, crash reporting and automatic upgrades off, so nothing
//!   leaves the machine;
//! - shares the folder [`FOLDER_ID`] (`sendreceive`) with every other device,
//!   rescanned every second and watched (`fsWatcherDelayS` 1), keeping up to
//!   10 conflict copies (a folder written into `config.xml` by hand gets
//!   `maxConflicts` 0, which silently disables conflict copies: it is set
//!   explicitly).
//!
//! Syncthing run as root only logs a warning ("should not run as a
//! privileged or system user"); nothing here needs root, and the fixture
//! runs the same for an unprivileged user. The binary is `syncthing` from
//! `PATH`, or `CHATVAULT_SYNCTHING_BIN`; it was written against the Debian
//! package 1.19.2 (`apt-get install syncthing`).
//!
//! Every wait is bounded, and its error carries the tail of each device's
//! log. [`SyncthingCluster::stop`] (or dropping the cluster) kills the
//! processes and removes the temporary directory.
//!
//! Inside a device's folder, `.stfolder` (the marker) and Syncthing's own
//! temporary files (`.syncthing.*.tmp`, `~syncthing~*.tmp`) are not part of
//! the shared content; [`SyncthingCluster::files`] leaves them out.

use crate::tree::read_tree;
use crate::Served;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The id (and label) of the folder every device of a cluster shares.
pub const FOLDER_ID: &str = "chatvault";
/// How long [`SyncthingCluster::start`] waits for every device to answer
/// and connect to every other one.
pub const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a pause or a resume waits for the connections to follow.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(30);
/// How long one REST request may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);
/// How often waits poll the REST API.
const POLL: Duration = Duration::from_millis(100);
/// How many log lines an error message carries per device.
const LOG_TAIL_LINES: usize = 15;

/// The `syncthing` binary: `CHATVAULT_SYNCTHING_BIN`, else `syncthing` from
/// `PATH`.
pub fn binary() -> PathBuf {
    std::env::var_os("CHATVAULT_SYNCTHING_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("syncthing"))
}

/// The first line of `syncthing --version`, or why Syncthing cannot be run
/// (not installed: the message says `apt-get install syncthing`).
pub fn version() -> Result<String, String> {
    let binary = binary();
    let output = Command::new(&binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "Syncthing is not installed ({} not found): install it with \
                     `apt-get install syncthing` or name the binary in CHATVAULT_SYNCTHING_BIN",
                    binary.display()
                )
            } else {
                format!("cannot run {}: {e}", binary.display())
            }
        })?;
    if !output.status.success() {
        return Err(format!(
            "{} --version failed ({}): {}",
            binary.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned())
}

/// Whether `relative` (a path inside a device's folder) is Syncthing's own:
/// the folder marker, versions, ignore file or a temporary file.
pub fn is_syncthing_internal(relative: &Path) -> bool {
    let Some(name) = relative.file_name().and_then(|name| name.to_str()) else {
        return false;
    };
    let top_level = relative.parent() == Some(Path::new(""));
    (top_level && matches!(name, ".stfolder" | ".stversions" | ".stignore"))
        || (name.starts_with(".syncthing.") && name.ends_with(".tmp"))
        || (name.starts_with("~syncthing~") && name.ends_with(".tmp"))
}

/// One device of a cluster.
struct Device {
    /// The full device id (`XXXXXXX-…`, 63 characters).
    id: String,
    folder: PathBuf,
    /// `http://127.0.0.1:<port>`.
    gui: String,
    api_key: String,
    log: PathBuf,
    /// In a mutex so that waits (`&self`) can notice an exited process.
    child: Mutex<Option<Child>>,
}

/// N running Syncthing devices on loopback sharing [`FOLDER_ID`]; see the
/// module documentation. Dropping it kills the processes and removes every
/// file it made.
pub struct SyncthingCluster {
    devices: Vec<Device>,
    /// `offline[i]`: device `i` was taken offline by [`Self::pause_device`].
    offline: Vec<bool>,
    client: reqwest::Client,
    version: String,
    root: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for SyncthingCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncthingCluster")
            .field("devices", &self.devices.len())
            .field("offline", &self.offline)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A port of 127.0.0.1 that was free a moment ago (the listener that found
/// it is returned so that ports picked together differ; drop it before the
/// port is used).
fn free_port() -> Result<(TcpListener, u16), String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free loopback port: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("no free loopback port: {e}"))?
        .port();
    Ok((listener, port))
}

/// `text` escaped for an XML attribute or element.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The tail (`lines` lines) of a log file, or why it cannot be read.
fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// The `config.xml` of one device.
struct ConfigXml<'a> {
    me: usize,
    ids: &'a [String],
    listen_ports: &'a [u16],
    gui_port: u16,
    api_key: &'a str,
    folder: &'a Path,
}

impl ConfigXml<'_> {
    fn render(&self) -> String {
        let folder_devices: String = self
            .ids
            .iter()
            .map(|id| format!("    <device id=\"{id}\" introducedBy=\"\"></device>\n"))
            .collect();
        let devices: String = self
            .ids
            .iter()
            .zip(self.listen_ports)
            .enumerate()
            .map(|(i, (id, port))| {
                // Only the higher-numbered device of a pair dials (see the
                // module documentation).
                let address = if i < self.me {
                    format!("tcp://127.0.0.1:{port}")
                } else {
                    "dynamic".to_owned()
                };
                format!(
                    "  <device id=\"{id}\" name=\"device{i}\" compression=\"metadata\" \
                     introducer=\"false\">\n    <address>{address}</address>\n    \
                     <paused>false</paused>\n    <autoAcceptFolders>false</autoAcceptFolders>\n  \
                     </device>\n"
                )
            })
            .collect();
        format!(
            r#"<configuration version="36">
  <folder id="{FOLDER_ID}" label="{FOLDER_ID}" path="{path}" type="sendreceive" rescanIntervalS="1" fsWatcherEnabled="true" fsWatcherDelayS="1" ignorePerms="false" autoNormalize="true">
    <filesystemType>basic</filesystemType>
{folder_devices}    <minDiskFree unit="%">0</minDiskFree>
    <maxConflicts>10</maxConflicts>
    <markerName>.stfolder</markerName>
    <order>random</order>
    <maxConcurrentWrites>2</maxConcurrentWrites>
    <paused>false</paused>
  </folder>
{devices}  <gui enabled="true" tls="false" debugging="false">
    <address>127.0.0.1:{gui_port}</address>
    <apikey>{api_key}</apikey>
    <theme>default</theme>
  </gui>
  <options>
    <listenAddress>tcp://127.0.0.1:{listen_port}</listenAddress>
    <globalAnnounceServer>default</globalAnnounceServer>
    <globalAnnounceEnabled>false</globalAnnounceEnabled>
    <localAnnounceEnabled>false</localAnnounceEnabled>
    <reconnectionIntervalS>5</reconnectionIntervalS>
    <relaysEnabled>false</relaysEnabled>
    <startBrowser>false</startBrowser>
    <natEnabled>false</natEnabled>
    <urAccepted>-1</urAccepted>
    <urSeen>3</urSeen>
    <autoUpgradeIntervalH>0</autoUpgradeIntervalH>
    <crashReportingEnabled>false</crashReportingEnabled>
    <stunKeepaliveStartS>0</stunKeepaliveStartS>
    <setLowPriority>false</setLowPriority>
    <announceLANAddresses>false</announceLANAddresses>
    <minHomeDiskFree unit="%">0</minHomeDiskFree>
  </options>
</configuration>
"#,
            path = xml_escape(&self.folder.to_string_lossy()),
            gui_port = self.gui_port,
            api_key = xml_escape(self.api_key),
            listen_port = self.listen_ports[self.me],
        )
    }
}

impl SyncthingCluster {
    /// Starts `n` (at least 2) devices sharing [`FOLDER_ID`] and waits (at
    /// most [`START_LIMIT`]) until each answers its REST API, is connected
    /// to every other one and reports the folder idle. Fails when Syncthing
    /// is not installed (the message says how to install it) or a device
    /// does not come up (the message carries the logs' tails).
    pub async fn start(n: usize) -> Result<SyncthingCluster, String> {
        if n < 2 {
            return Err(format!(
                "a Syncthing cluster needs 2 devices or more, not {n}"
            ));
        }
        let version = version()?;
        let root = tempfile::Builder::new()
            .prefix("chatvault-syncthing-")
            .tempdir()
            .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
        let mut cluster = SyncthingCluster {
            devices: Vec::with_capacity(n),
            offline: vec![false; n],
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(REQUEST_LIMIT)
                .build()
                .map_err(|e| format!("cannot build an HTTP client: {e}"))?,
            version,
            root: None,
        };
        let root_path = root.path().to_owned();
        cluster.root = Some(root);

        // Keys and device ids first: every config names every device.
        let mut homes = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let home = root_path.join(format!("home{i}"));
            run_quiet(
                Command::new(binary())
                    .arg("generate")
                    .arg(format!("--home={}", home.display()))
                    .arg("--no-default-folder"),
                "syncthing generate",
            )?;
            let id = run_quiet(
                Command::new(binary())
                    .arg("serve")
                    .arg(format!("--home={}", home.display()))
                    .arg("--device-id"),
                "syncthing serve --device-id",
            )?;
            let id = id.trim().to_owned();
            if id.len() != 63 || id.split('-').count() != 8 {
                return Err(format!("syncthing printed an odd device id: {id:?}"));
            }
            homes.push(home);
            ids.push(id);
        }

        let mut holders = Vec::with_capacity(2 * n);
        let mut listen_ports = Vec::with_capacity(n);
        let mut gui_ports = Vec::with_capacity(n);
        for _ in 0..n {
            let (holder, port) = free_port()?;
            holders.push(holder);
            listen_ports.push(port);
            let (holder, port) = free_port()?;
            holders.push(holder);
            gui_ports.push(port);
        }
        let mut configs = Vec::with_capacity(n);
        for (i, home) in homes.iter().enumerate() {
            let folder = root_path.join(format!("folder{i}"));
            std::fs::create_dir_all(folder.join(".stfolder"))
                .map_err(|e| format!("cannot make {}: {e}", folder.display()))?;
            let api_key = uuid::Uuid::now_v7().simple().to_string();
            let config = ConfigXml {
                me: i,
                ids: &ids,
                listen_ports: &listen_ports,
                gui_port: gui_ports[i],
                api_key: &api_key,
                folder: &folder,
            }
            .render();
            std::fs::write(home.join("config.xml"), config)
                .map_err(|e| format!("cannot write the config of device {i}: {e}"))?;
            configs.push((folder, api_key));
        }
        drop(holders);

        // One after the other: device `i` dials devices `j < i` as soon as
        // it starts, and a refused dial is retried only 5 s later.
        let deadline = Instant::now() + START_LIMIT;
        for (i, (home, (folder, api_key))) in homes.iter().zip(configs).enumerate() {
            let log = root_path.join(format!("syncthing{i}.log"));
            let out =
                File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
            let err = out
                .try_clone()
                .map_err(|e| format!("cannot share {}: {e}", log.display()))?;
            let child = Command::new(binary())
                .arg("serve")
                .arg(format!("--home={}", home.display()))
                .args([
                    "--no-browser",
                    "--no-restart",
                    "--no-upgrade",
                    "--no-default-folder",
                    "--logflags=3",
                ])
                .env("STNORESTART", "1")
                .env("STNOUPGRADE", "1")
                .env("STNODEFAULTFOLDER", "1")
                .env_remove("STGUIADDRESS")
                .env_remove("STGUIAPIKEY")
                .env_remove("STHOMEDIR")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("cannot start syncthing for device {i}: {e}"))?;
            cluster.devices.push(Device {
                id: ids[i].clone(),
                folder,
                gui: format!("http://127.0.0.1:{}", gui_ports[i]),
                api_key,
                log,
                child: Mutex::new(Some(child)),
            });
            // The REST API answers after the sync listener started.
            loop {
                cluster.check_running()?;
                if cluster.get(i, "/rest/system/ping").await.is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(cluster.failure(&format!(
                        "device {i} did not answer its REST API within {START_LIMIT:?}"
                    )));
                }
                tokio::time::sleep(POLL).await;
            }
        }

        cluster.wait_connections(deadline, "start").await?;
        loop {
            let mut busy = None;
            for i in 0..n {
                let status = cluster.folder_status(i).await?;
                if status["state"].as_str() != Some("idle") {
                    busy = Some(format!("device {i}: folder state {}", status["state"]));
                    break;
                }
            }
            match busy {
                None => return Ok(cluster),
                Some(what) if Instant::now() > deadline => {
                    return Err(cluster.failure(&format!(
                        "the folder did not become idle within {START_LIMIT:?} ({what})"
                    )))
                }
                Some(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Starts `n` devices for a test, or says why it cannot: `None` (a
    /// skip, printed on stderr) when Syncthing cannot be had and `CI` is not
    /// set ([`chatvault_conformance::services_required`]); with `CI` set the
    /// failure panics, so a CI run never skips Syncthing tests silently.
    pub async fn start_for_test(n: usize) -> Option<SyncthingCluster> {
        match Self::start(n).await {
            Ok(cluster) => Some(cluster),
            Err(e) if chatvault_conformance::services_required() => {
                panic!("CI is set and a Syncthing cluster of {n} could not start: {e}")
            }
            Err(e) => {
                eprintln!("skipped: no Syncthing cluster (set CI to fail instead): {e}");
                None
            }
        }
    }

    /// How this fixture was served: always local processes.
    pub fn served(&self) -> Served {
        Served::StandIn {
            what: format!("{} ({} local processes)", self.version, self.devices.len()),
        }
    }

    /// How many devices the cluster has.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether the cluster has no device (never, once started).
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Device `i`'s copy of the shared folder. Panics when `i` is out of
    /// range.
    pub fn folder(&self, i: usize) -> &Path {
        &self.devices[i].folder
    }

    /// Device `i`'s full device id. Conflict copies made on device `i` end
    /// in the first 7 characters of it. Panics when `i` is out of range.
    pub fn device_id(&self, i: usize) -> &str {
        &self.devices[i].id
    }

    /// The temporary directory holding every home, folder and log (removed
    /// by [`Self::stop`] and on drop).
    pub fn root(&self) -> Option<&Path> {
        self.root.as_ref().map(|root| root.path())
    }

    /// The process ids of the running devices.
    pub fn pids(&self) -> Vec<u32> {
        self.devices
            .iter()
            .filter_map(|device| {
                let child = device.child.lock().ok()?;
                child.as_ref().map(Child::id)
            })
            .collect()
    }

    /// The last `lines` lines of device `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        tail(&self.devices[i].log, lines)
    }

    /// Every file of device `i`'s folder (recursively, by relative path,
    /// with its content), Syncthing's own files left out
    /// ([`is_syncthing_internal`]).
    pub fn files(&self, i: usize) -> Result<BTreeMap<PathBuf, Vec<u8>>, String> {
        read_tree(&self.devices[i].folder, &is_syncthing_internal)
            .map_err(|e| format!("cannot read the folder of device {i}: {e}"))
    }

    /// Asks device `i` to rescan the folder now and returns once the scan is
    /// done (Syncthing answers `POST /rest/db/scan` after scanning), so a
    /// write made before the call is in the device's index.
    pub async fn scan(&self, i: usize) -> Result<(), String> {
        self.post(i, &format!("/rest/db/scan?folder={FOLDER_ID}"))
            .await
    }

    /// Takes device `i` offline: every other device pauses it and it pauses
    /// every other device (`POST /rest/system/pause?device=`), then waits
    /// (at most [`CONNECT_LIMIT`]) until no connection to it is left. Writes
    /// made in its folder (or in the others') meanwhile stay local until
    /// [`Self::resume_device`].
    pub async fn pause_device(&mut self, i: usize) -> Result<(), String> {
        self.offline[i] = true;
        for j in 0..self.devices.len() {
            if j != i {
                let (other, me) = (self.devices[j].id.clone(), self.devices[i].id.clone());
                self.post(i, &format!("/rest/system/pause?device={other}"))
                    .await?;
                self.post(j, &format!("/rest/system/pause?device={me}"))
                    .await?;
            }
        }
        self.wait_connections(Instant::now() + CONNECT_LIMIT, "pause")
            .await
    }

    /// Brings device `i` back online: first every device rescans (so edits
    /// made while offline are in the indexes and meet as Syncthing would
    /// meet them, e.g. as a conflict), then device `i` and every device that
    /// is not itself offline resume each other; waits (at most
    /// [`CONNECT_LIMIT`]) until they are connected.
    pub async fn resume_device(&mut self, i: usize) -> Result<(), String> {
        for j in 0..self.devices.len() {
            self.scan(j).await?;
        }
        self.offline[i] = false;
        let peers: Vec<usize> = (0..self.devices.len())
            .filter(|j| *j != i && !self.offline[*j])
            .collect();
        // Per pair, the side that accepts (lower number) resumes first, then
        // the side that dials: resuming dials at once, and that dial is
        // accepted instead of refused and retried seconds later.
        for j in peers {
            let (low, high) = (i.min(j), i.max(j));
            let (low_id, high_id) = (self.devices[low].id.clone(), self.devices[high].id.clone());
            self.post(low, &format!("/rest/system/resume?device={high_id}"))
                .await?;
            self.post(high, &format!("/rest/system/resume?device={low_id}"))
                .await?;
        }
        self.wait_connections(Instant::now() + CONNECT_LIMIT, "resume")
            .await
    }

    /// Waits, at most `timeout`, until every online device (not taken
    /// offline by [`Self::pause_device`]) holds the same files: every device
    /// rescans first (so local writes are indexed, offline devices'
    /// included), then the wait polls until each online device reports the
    /// folder `idle` with nothing needed, 100% completion (nothing needed)
    /// for every other online device, and the online devices' files (as
    /// [`Self::files`] reads them) are identical. Offline devices are left
    /// out. The timeout's error says what was still missing and carries the
    /// logs' tails.
    pub async fn wait_in_sync(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.devices.len() {
            self.scan(i).await?;
        }
        loop {
            self.check_running()?;
            let missing = match self.out_of_sync().await {
                Ok(None) => return Ok(()),
                Ok(Some(missing)) => missing,
                Err(e) => format!("REST error: {e}"),
            };
            if Instant::now() > deadline {
                return Err(self.failure(&format!(
                    "the devices were not in sync within {timeout:?}: {missing}"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills every device (SIGKILL; the folders are throwaway) and removes
    /// the temporary directory.
    pub fn stop(mut self) -> Result<(), String> {
        self.kill_all();
        match self.root.take() {
            Some(root) => root
                .close()
                .map_err(|e| format!("cannot remove the cluster's directory: {e}")),
            None => Ok(()),
        }
    }

    fn kill_all(&mut self) {
        for device in &mut self.devices {
            let child = match device.child.get_mut() {
                Ok(child) => child.take(),
                Err(poisoned) => poisoned.into_inner().take(),
            };
            if let Some(mut child) = child {
                // Already exited is fine: wait() reaps it either way.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// `None` when every device is in sync, else what is still missing.
    async fn out_of_sync(&self) -> Result<Option<String>, String> {
        let online: Vec<usize> = (0..self.devices.len())
            .filter(|i| !self.offline[*i])
            .collect();
        for &i in &online {
            let status = self.folder_status(i).await?;
            if status["state"].as_str() != Some("idle") {
                return Ok(Some(format!("device {i}: folder {}", status["state"])));
            }
            if status["needTotalItems"].as_u64() != Some(0) {
                return Ok(Some(format!(
                    "device {i} needs {} items",
                    status["needTotalItems"]
                )));
            }
            for &j in &online {
                if j == i {
                    continue;
                }
                let completion = self
                    .get(
                        i,
                        &format!(
                            "/rest/db/completion?folder={FOLDER_ID}&device={}",
                            self.devices[j].id
                        ),
                    )
                    .await?;
                let percent = completion["completion"].as_f64().unwrap_or(0.0);
                if percent < 100.0
                    || completion["needItems"].as_u64() != Some(0)
                    || completion["needDeletes"].as_u64() != Some(0)
                {
                    return Ok(Some(format!(
                        "device {i} sees device {j} at {percent}% ({} items, {} deletes needed)",
                        completion["needItems"], completion["needDeletes"]
                    )));
                }
            }
        }
        let Some((&first_device, rest)) = online.split_first() else {
            return Ok(None);
        };
        let first = self.files(first_device)?;
        for &i in rest {
            let other = self.files(i)?;
            if other != first {
                let differing: Vec<_> = first
                    .keys()
                    .chain(other.keys())
                    .filter(|path| first.get(*path) != other.get(*path))
                    .map(|path| path.display().to_string())
                    .collect();
                return Ok(Some(format!(
                    "the folders of devices {first_device} and {i} differ in {differing:?}"
                )));
            }
        }
        Ok(None)
    }

    async fn folder_status(&self, i: usize) -> Result<Value, String> {
        self.get(i, &format!("/rest/db/status?folder={FOLDER_ID}"))
            .await
    }

    /// Waits until every pair of online devices is connected and no
    /// connection to an offline device is left.
    async fn wait_connections(&self, deadline: Instant, during: &str) -> Result<(), String> {
        loop {
            self.check_running()?;
            let mut wrong = None;
            'devices: for i in 0..self.devices.len() {
                let connections = match self.get(i, "/rest/system/connections").await {
                    Ok(connections) => connections,
                    Err(e) => {
                        wrong = Some(e);
                        break;
                    }
                };
                for j in 0..self.devices.len() {
                    if j == i {
                        continue;
                    }
                    let want = !self.offline[i] && !self.offline[j];
                    let connected = connections["connections"][&self.devices[j].id]["connected"]
                        .as_bool()
                        .unwrap_or(false);
                    if connected != want {
                        wrong = Some(format!(
                            "device {i} {} device {j}",
                            if want {
                                "is not connected to"
                            } else {
                                "is still connected to"
                            }
                        ));
                        break 'devices;
                    }
                }
            }
            match wrong {
                None => return Ok(()),
                Some(what) if Instant::now() > deadline => {
                    return Err(
                        self.failure(&format!("{during}: connections did not settle: {what}"))
                    )
                }
                Some(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// An error when a device's process has exited.
    fn check_running(&self) -> Result<(), String> {
        for (i, device) in self.devices.iter().enumerate() {
            let mut child = device
                .child
                .lock()
                .map_err(|_| format!("device {i}: process handle poisoned"))?;
            if let Some(child) = child.as_mut() {
                match child.try_wait() {
                    Ok(None) => {}
                    Ok(Some(status)) => {
                        return Err(
                            self.failure(&format!("syncthing of device {i} exited ({status})"))
                        )
                    }
                    Err(e) => return Err(format!("device {i}: cannot check the process: {e}")),
                }
            }
        }
        Ok(())
    }

    /// `what` followed by the tail of every device's log.
    fn failure(&self, what: &str) -> String {
        let mut message = what.to_owned();
        for (i, device) in self.devices.iter().enumerate() {
            message.push_str(&format!(
                "\n--- device {i} ({}) log tail:\n{}",
                device.log.display(),
                tail(&device.log, LOG_TAIL_LINES)
            ));
        }
        message
    }

    async fn get(&self, i: usize, path: &str) -> Result<Value, String> {
        let device = &self.devices[i];
        let response = self
            .client
            .get(format!("{}{path}", device.gui))
            .header("X-API-Key", &device.api_key)
            .send()
            .await
            .map_err(|e| format!("device {i}: GET {path}: {e}"))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| format!("device {i}: GET {path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("device {i}: GET {path}: {status}: {}", body.trim()));
        }
        serde_json::from_str(&body)
            .map_err(|e| format!("device {i}: GET {path}: not JSON ({e}): {body}"))
    }

    async fn post(&self, i: usize, path: &str) -> Result<(), String> {
        let device = &self.devices[i];
        let response = self
            .client
            .post(format!("{}{path}", device.gui))
            .header("X-API-Key", &device.api_key)
            .send()
            .await
            .map_err(|e| self.failure(&format!("device {i}: POST {path}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(self.failure(&format!(
                "device {i}: POST {path}: {status}: {}",
                body.trim()
            )));
        }
        Ok(())
    }
}

impl Drop for SyncthingCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Runs `command` to completion (at most a few seconds: `generate` and
/// `--device-id` do not serve) and returns its stdout, or an error with its
/// output.
fn run_quiet(command: &mut Command, what: &str) -> Result<String, String> {
    let output = command
        .env("STNODEFAULTFOLDER", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
