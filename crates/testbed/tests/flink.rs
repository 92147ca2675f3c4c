//! The test bed's real Flink: the distribution cache, a JobManager in ZooKeeper HA mode against
//! a real ZooKeeper (random RPC and blob ports, bound where configured, new ones on restart),
//! a TaskManager that finds it through ZooKeeper, and no JVM left behind.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use testbed::flink::{
    self, DEFAULT_VERSION, Flink, JobManager, JobManagerConfig, TaskManager, TaskManagerConfig,
};
use testbed::zookeeper::{Ensemble, EnsembleConfig};

/// Generous: a JobManager answers in 5–15 s on a busy 2-core machine.
const START_LIMIT: Duration = Duration::from_secs(90);

/// The demo's layout: the JobManager advertises a "Service" address and binds a "pod" one.
const SERVICE_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const POD_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

fn flink() -> Flink {
    Flink::install(DEFAULT_VERSION).expect("Flink installs into the cache")
}

fn zookeeper() -> Ensemble {
    Ensemble::start_standalone(EnsembleConfig::standalone()).expect("ZooKeeper starts")
}

fn is_listening(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok()
}

fn rss_mib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn assert_pid_gone(pid: u32, what: &str) {
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "{what}: process {pid} is still there"
    );
}

/// The JVM and every helper its launch script started.
fn assert_gone(pid: u32, dir: &Path, what: &str) {
    assert_pid_gone(pid, what);
    let left = flink::processes_of(dir);
    assert!(
        left.is_empty(),
        "{what}: processes {left:?} of {} remain",
        dir.display()
    );
}

#[test]
fn installing_again_neither_downloads_nor_unpacks() {
    let first = flink();
    let started = Instant::now();
    let second = flink();
    let took = started.elapsed();
    assert_eq!(second.actions(), flink::InstallActions::default());
    assert!(
        took < Duration::from_secs(1),
        "a cached install took {took:?}"
    );
    assert_eq!(first.home(), second.home());
    assert_eq!(second.version(), DEFAULT_VERSION);
    assert_eq!(second.major_version(), 2);
}

#[test]
fn concurrent_installs_into_a_fresh_cache_unpack_once_from_cached_wheels() {
    // The cached wheels, linked into a fresh cache on the same file system (no copy of
    // 330 MB), so this test never downloads.
    let real_cache = flink::cache_dir().unwrap();
    flink();
    let fresh_cache = tempfile::Builder::new()
        .prefix(".test-cache-")
        .tempdir_in(&real_cache)
        .unwrap();
    let wheels = fresh_cache.path().join("wheels");
    fs::create_dir(&wheels).unwrap();
    for entry in fs::read_dir(real_cache.join("wheels")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.contains(&format!("-{DEFAULT_VERSION}-")) {
            fs::hard_link(&path, wheels.join(&name))
                .or_else(|_| fs::copy(&path, wheels.join(&name)).map(drop))
                .unwrap();
        }
    }

    let installs: Vec<Flink> = thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| Flink::install_in(fresh_cache.path(), DEFAULT_VERSION)))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap().unwrap())
            .collect()
    });
    let unpacked = installs.iter().filter(|f| f.actions().unpacked).count();
    assert_eq!(
        unpacked,
        1,
        "{:?}",
        installs.iter().map(Flink::actions).collect::<Vec<_>>()
    );
    assert!(installs.iter().all(|f| !f.actions().downloaded));
    assert_eq!(installs[0].home(), installs[1].home());

    let home = installs[0].home();
    assert_eq!(
        home,
        fresh_cache.path().join(format!("flink-{DEFAULT_VERSION}"))
    );
    let jobmanager_sh = fs::metadata(home.join("bin/jobmanager.sh")).unwrap();
    assert_ne!(
        jobmanager_sh.permissions().mode() & 0o111,
        0,
        "bin/jobmanager.sh not executable"
    );
    assert!(
        home.join(format!("lib/flink-dist-{DEFAULT_VERSION}.jar"))
            .is_file()
    );
    assert!(home.join("bin/bash-java-utils.jar").is_file());
    assert!(home.join("conf/config.yaml").is_file());
    let leftovers: Vec<_> = fs::read_dir(fresh_cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.contains("partial"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "half-done unpacks left: {leftovers:?}"
    );

    let again = Flink::install_in(fresh_cache.path(), DEFAULT_VERSION).unwrap();
    assert_eq!(again.actions(), flink::InstallActions::default());
}

#[test]
fn an_unknown_version_is_refused_before_pip_runs() {
    let cache = tempfile::tempdir().unwrap();
    let error = Flink::install_in(cache.path(), "latest").unwrap_err();
    assert!(
        error.to_string().contains("not a Flink release version"),
        "{error}"
    );
    assert_eq!(fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[test]
fn a_jobmanager_in_ha_mode_binds_random_ports_on_its_pod_address_and_gets_new_ones_on_restart() {
    let flink = flink();
    let zookeeper = zookeeper();
    let mut jobmanager = JobManager::start(
        &flink,
        JobManagerConfig::new(&zookeeper.connect_string())
            .advertised_address(SERVICE_ADDRESS)
            .bind_address(POD_ADDRESS),
    )
    .unwrap();
    let took = jobmanager.wait_rest_ready(START_LIMIT).unwrap();
    let pid = jobmanager.pid().unwrap();
    eprintln!(
        "JobManager answered after {took:.1?}, RSS {:?} MiB",
        rss_mib(pid)
    );
    assert_eq!(jobmanager.rest_address().ip(), POD_ADDRESS);

    let config = jobmanager.live_config().unwrap();
    assert_eq!(config["high-availability.type"], "zookeeper");
    assert_eq!(
        config["high-availability.zookeeper.quorum"],
        zookeeper.connect_string()
    );
    assert_eq!(
        config["jobmanager.rpc.address"],
        SERVICE_ADDRESS.to_string()
    );
    let (rpc, blob) = jobmanager.live_ports().unwrap();
    eprintln!("live ports: rpc {rpc}, blob {blob}");
    assert!(
        rpc != 0 && blob != 0,
        "ports not bound: rpc {rpc}, blob {blob}"
    );
    for port in [rpc, blob] {
        assert!(
            is_listening(SocketAddr::new(POD_ADDRESS, port)),
            "nothing on the pod address at {port}\n{}",
            jobmanager.log()
        );
        // Only there: the demo's forwarder listens on the Service address at these ports.
        assert!(
            !is_listening(SocketAddr::new(SERVICE_ADDRESS, port)),
            "port {port} open on the Service address"
        );
    }

    jobmanager.restart().unwrap();
    // Its dir is in use by the new run, so only the old JVM's pid can be checked here.
    assert_pid_gone(pid, "the JobManager after restart()");
    let took = jobmanager.wait_rest_ready(START_LIMIT).unwrap();
    let (new_rpc, new_blob) = jobmanager.live_ports().unwrap();
    eprintln!(
        "after restart: answered after {took:.1?}; live ports: rpc {new_rpc}, blob {new_blob}"
    );
    assert_ne!(new_rpc, rpc, "the RPC port survived a restart");
    assert_ne!(new_blob, blob, "the blob port survived a restart");
    assert!(is_listening(SocketAddr::new(POD_ADDRESS, new_rpc)));
    assert!(is_listening(SocketAddr::new(POD_ADDRESS, new_blob)));
    assert!(
        jobmanager
            .log()
            .matches("Starting standalonesession")
            .count()
            >= 2,
        "the log lost the first run"
    );

    let pid = jobmanager.pid().unwrap();
    let dir = jobmanager.dir().to_owned();
    drop(jobmanager);
    assert_gone(pid, &dir, "the JobManager after drop");
    assert!(!dir.exists(), "{} is left", dir.display());
}

#[test]
fn a_panic_while_the_launch_script_runs_leaves_no_process_behind() {
    let flink = flink();
    let (sender, receiver) = mpsc::channel();
    let panicked = thread::spawn(move || {
        let jobmanager = JobManager::start(&flink, JobManagerConfig::new("127.0.0.1:1")).unwrap();
        sender
            .send((jobmanager.pid().unwrap(), jobmanager.dir().to_owned()))
            .unwrap();
        // Long enough for the script to be running its helper JVM (BashJavaUtils), which
        // a kill of the script alone would orphan.
        let main_pid = jobmanager.pid().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let helper_jvm_runs = || {
            flink::processes_of(jobmanager.dir()).iter().any(|&pid| {
                pid != main_pid
                    && fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|comm| comm.trim() == "java")
            })
        };
        while !helper_jvm_runs() {
            assert!(
                Instant::now() < deadline,
                "the launch script started no helper JVM"
            );
            thread::sleep(Duration::from_millis(10));
        }
        panic!("on purpose, with the JobManager's launch under way");
    })
    .join();
    assert!(panicked.is_err());
    let (pid, dir) = receiver.recv().unwrap();
    assert_gone(pid, &dir, "the JobManager after a panic");
}

#[test]
fn a_taskmanager_finds_the_jobmanager_through_zookeeper_and_registers_again_after_its_restart() {
    let flink = flink();
    let zookeeper = zookeeper();
    let mut jobmanager =
        JobManager::start(&flink, JobManagerConfig::new(&zookeeper.connect_string())).unwrap();
    let mut taskmanager =
        TaskManager::start(&flink, TaskManagerConfig::for_jobmanager(&jobmanager)).unwrap();
    jobmanager.wait_rest_ready(START_LIMIT).unwrap();
    let took = jobmanager
        .wait_taskmanagers(1, START_LIMIT)
        .map_err(|error| format!("{error}\nTaskManager log:\n{}", taskmanager.log()))
        .unwrap();
    eprintln!(
        "TaskManager registered {took:.1?} after the JobManager's start; RSS {:?} MiB",
        taskmanager.pid().and_then(rss_mib)
    );
    assert_eq!(jobmanager.taskmanagers().unwrap(), 1);

    // The demo's last step: the JobManager comes back on new ports, published in ZooKeeper,
    // and the same TaskManager follows.
    jobmanager.restart().unwrap();
    jobmanager.wait_rest_ready(START_LIMIT).unwrap();
    let took = jobmanager
        .wait_taskmanagers(1, START_LIMIT)
        .map_err(|error| format!("{error}\nTaskManager log:\n{}", taskmanager.log()))
        .unwrap();
    eprintln!("TaskManager registered again {took:.1?} after the JobManager's restart");
    taskmanager.check_alive().unwrap();

    let pid = taskmanager.pid().unwrap();
    let dir = taskmanager.dir().to_owned();
    drop(taskmanager);
    assert_gone(pid, &dir, "the TaskManager after drop");
}
