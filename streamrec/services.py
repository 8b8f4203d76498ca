"""Local Kafka (single-node KRaft) and Redis on loopback, for machines without Docker.

:class:`LocalServices` fetches the Apache Kafka broker jars from Maven Central
with Maven (cached in the user's cache folder), formats and starts a broker,
starts Debian's ``redis-server`` (installing it with apt-get when missing and
allowed), waits until both answer, and records their PIDs, ports and logs in
a state directory. ``up`` is idempotent; ``down`` stops only the processes
that ``up`` started, by PID.

:func:`resolve_services` is what the CLI, the demo and the tests call: it
returns the configured ``KAFKA_BOOTSTRAP_SERVERS`` / ``REDIS_URL`` when set,
and otherwise starts (or reuses) local services.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from streamrec.security import Security
from streamrec.settings import Settings, cache_dir

__all__ = [
    "KAFKA_VERSION",
    "Endpoints",
    "LocalRedis",
    "LocalServices",
    "ServiceError",
    "ensure_kafka_jars",
    "ensure_redis_server",
    "kafka_log_config",
    "kafka_pom",
    "resolve_kafka_version",
    "resolve_services",
]

log = logging.getLogger(__name__)

#: The broker version started when neither ``STREAMREC_KAFKA_VERSION`` nor ``kafka_version=`` says otherwise.
KAFKA_VERSION = "4.4.0"
#: log4j 2 of the Kafka 4 jars: Kafka 4.4.0 brings log4j-api/-core 2.25.5; the pom pins all three at it.
LOG4J2_VERSION = "2.25.5"
_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.streamrec</groupId><artifactId>kafka-broker-jars</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version></dependency>
{logging}  </dependencies>
</project>
"""
# Kafka 3.x logs through slf4j 1.7 to log4j 1 (reload4j); neither is in kafka_2.13's runtime dependencies.
_DEP = "    <dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version></dependency>\n"
_POM_LOGGING_3 = _DEP.format("org.slf4j", "slf4j-reload4j", "1.7.36") + _DEP.format(
    "ch.qos.reload4j", "reload4j", "1.2.25"
)
# Kafka 4.x brings log4j-api/-core 2 and slf4j-api 1.7 but no binding: log4j-slf4j-impl is slf4j 1.x -> log4j 2.
_POM_LOGGING_4 = "".join(
    _DEP.format("org.apache.logging.log4j", name, LOG4J2_VERSION)
    for name in ("log4j-api", "log4j-core", "log4j-slf4j-impl")
)
_LOG4J = """log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={logfile}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
"""
_LOG4J2 = """status = warn
name = streamrec-kafka
appender.file.type = File
appender.file.name = file
appender.file.fileName = {logfile}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apachekafka.name = org.apache.kafka
logger.apachekafka.level = INFO
"""
_SERVER_PROPERTIES = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{cport}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
"""
#: What every local broker shares (single node, small thread pools, topics created on demand).
BROKER_COMMON = """log.dirs={data}
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
num.network.threads=2
num.io.threads=2
log.cleaner.dedupe.buffer.size=16777216
"""
_SERVER_PROPERTIES += BROKER_COMMON


class ServiceError(RuntimeError):
    """A local service could not be set up; the message says why and what to do."""


@dataclass(frozen=True)
class Endpoints:
    """Where the broker and Redis answer."""

    kafka_bootstrap_servers: str
    redis_url: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _alive(pid: int | None, must_contain: str) -> bool:
    """Whether ``pid`` runs and its command line contains ``must_contain`` (no PID reuse)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    if ") Z " in stat:  # zombie: exited, not yet reaped
        return False
    return must_contain in cmdline


def _stop_pid(pid: int, must_contain: str, timeout: float = 30.0) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; only if the process is still ours."""
    if not _alive(pid, must_contain):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid, must_contain):
            return True
        _reap(pid)
        time.sleep(0.2)
    if _alive(pid, must_contain):
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        _reap(pid)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def resolve_kafka_version(version: str | None = None) -> str:
    """The broker version to run: ``version``, else ``STREAMREC_KAFKA_VERSION``, else :data:`KAFKA_VERSION`.

    Parameters
    ----------
    version
        An explicit version (``LocalServices(kafka_version=...)``); ``None`` or empty reads the environment.

    Returns
    -------
    str
        ``MAJOR.MINOR.PATCH`` of an Apache Kafka release, 3.x or later.

    Raises
    ------
    ValueError
        When the version is not ``MAJOR.MINOR.PATCH`` or older than 3.

    Examples
    --------
    >>> resolve_kafka_version("3.9.1")
    '3.9.1'
    >>> resolve_kafka_version("4.4")
    Traceback (most recent call last):
    ...
    ValueError: Kafka version '4.4': expected MAJOR.MINOR.PATCH of a 3.x or later release, e.g. 4.4.0
    """
    chosen = version or os.environ.get("STREAMREC_KAFKA_VERSION") or KAFKA_VERSION
    if not _VERSION.fullmatch(chosen) or _major(chosen) < 3:
        raise ValueError(
            f"Kafka version {chosen!r}: expected MAJOR.MINOR.PATCH of a 3.x or later release, e.g. {KAFKA_VERSION}"
        )
    return chosen


def _major(version: str) -> int:
    return int(version.split(".", 1)[0])


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def kafka_pom(version: str) -> str:
    """The Maven pom whose runtime dependencies are a Kafka broker of ``version`` and its logging backend.

    Kafka 3.x logs through slf4j 1.7 to log4j 1 (here reload4j); Kafka 4.x
    through slf4j 1.7 to log4j 2, whose slf4j binding its jars lack.

    Examples
    --------
    >>> "slf4j-reload4j" in kafka_pom("3.9.1"), "log4j-slf4j-impl" in kafka_pom("3.9.1")
    (True, False)
    >>> pom = kafka_pom("4.4.0")
    >>> "<version>4.4.0</version>" in pom, "log4j-slf4j-impl</artifactId><version>2.25.5<" in pom
    (True, True)
    >>> "reload4j" in pom
    False
    """
    logging_deps = _POM_LOGGING_3 if _major(version) < 4 else _POM_LOGGING_4
    return _POM.format(version=version, logging=logging_deps)


def kafka_log_config(version: str, kdir: Path) -> tuple[Path, str, str]:
    """How a broker of ``version`` whose folder is ``kdir`` logs to ``kdir/logs/server.log`` (never stdout).

    Returns
    -------
    tuple of (Path, str, str)
        The configuration file to write (in ``kdir``), its text, and the JVM
        option that points the broker at it: log4j 1 properties for 3.x,
        log4j 2 properties for 4.x.

    Examples
    --------
    >>> from pathlib import PurePosixPath
    >>> path, text, option = kafka_log_config("4.4.0", PurePosixPath("/k"))
    >>> str(path), option
    ('/k/log4j2.properties', '-Dlog4j2.configurationFile=/k/log4j2.properties')
    >>> "appender.file.fileName = /k/logs/server.log" in text
    True
    >>> path, text, option = kafka_log_config("3.9.1", PurePosixPath("/k"))
    >>> option, "log4j.appender.file.File=/k/logs/server.log" in text
    ('-Dlog4j.configuration=file:/k/log4j.properties', True)
    """
    logfile = kdir / "logs" / "server.log"
    if _major(version) < 4:
        path = kdir / "log4j.properties"
        return path, _LOG4J.format(logfile=logfile), f"-Dlog4j.configuration=file:{path}"
    path = kdir / "log4j2.properties"
    return path, _LOG4J2.format(logfile=logfile), f"-Dlog4j2.configurationFile={path}"


def ensure_kafka_jars(version: str | None = None, cache: Path | None = None) -> Path:
    """Return the folder of Kafka broker jars, fetching them with Maven on first use.

    Parameters
    ----------
    version
        The broker version (default: :func:`resolve_kafka_version`).
    cache
        The cache folder (default: the project's); the jars go to ``cache/kafka-<version>/libs``.
    """
    version = resolve_kafka_version(version)
    root = (cache or cache_dir()) / f"kafka-{version}"
    libs = root / "libs"
    marker = root / ".complete"
    if marker.exists() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(
            "Maven (mvn) is not installed: it fetches the Kafka broker jars. Install maven, or set KAFKA_BOOTSTRAP_SERVERS to an existing broker."
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / "pom.xml").write_text(kafka_pom(version))
    tmp = root / "libs.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("fetching Kafka %s jars with Maven into %s", version, libs)
    cmd = [
        mvn, "-B", "-q", "-f", str(root / "pom.xml"),
        "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={tmp}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServiceError(
            f"Maven could not fetch the Kafka jars (exit {result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    marker.touch()
    return libs


def ensure_redis_server() -> str:
    """The path of ``redis-server``, installed with ``apt-get`` when missing (as root, unless ``STREAMREC_NO_APT``)."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.environ.get("STREAMREC_NO_APT") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(
            "redis-server is not installed: run `apt-get install -y redis-server`, or set REDIS_URL to an existing server."
        )
    log.info("installing redis-server with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"]):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise ServiceError(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    found = shutil.which("redis-server")
    if not found:
        raise ServiceError("apt-get installed redis-server but it is not on PATH")
    return found


class LocalServices:
    """A Kafka broker and a Redis server on loopback, owned by one state directory.

    Parameters
    ----------
    state_dir
        Where configuration, data, logs and PIDs live.
    kafka_heap
        ``-Xmx`` of the broker JVM.
    kafka_version
        The Apache Kafka release to run (3.x or 4.x); default ``STREAMREC_KAFKA_VERSION``, else
        :data:`KAFKA_VERSION`. A broker that already runs under ``state_dir`` is reused whatever its version.

    Subclasses change how the services are configured through
    :meth:`_server_properties`, :meth:`_format_options`, :meth:`_redis_options`,
    :attr:`redis_scheme` and :meth:`client_security` (see
    :class:`streamrec.secure_services.SecureLocalServices`).
    """

    #: URL scheme of the Redis endpoint (``rediss`` for TLS).
    redis_scheme = "redis"

    def __init__(
        self, state_dir: str | Path | None = None, kafka_heap: str = "512m", kafka_version: str | None = None
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir else cache_dir() / "services"
        self.kafka_heap = kafka_heap
        self.kafka_version = resolve_kafka_version(kafka_version)
        self._state_file = self.state_dir / "services.json"

    # -- state ----------------------------------------------------------------------

    def _read_state(self) -> dict:
        try:
            return json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _write_state(self, state: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.rename(self._state_file)

    def _kafka_running(self, state: dict) -> bool:
        k = state.get("kafka", {})
        return _alive(k.get("pid"), "kafka.Kafka") and _port_open(k.get("port", 0))

    def _redis_running(self, state: dict) -> bool:
        r = state.get("redis", {})
        return _alive(r.get("pid"), "redis-server") and _port_open(r.get("port", 0))

    # -- public -----------------------------------------------------------------------

    def status(self) -> dict:
        """What runs now: ports, PIDs, whether each answers."""
        state = self._read_state()
        return {
            "state_dir": str(self.state_dir),
            "kafka": {**state.get("kafka", {}), "running": self._kafka_running(state)},
            "redis": {**state.get("redis", {}), "running": self._redis_running(state)},
        }

    def client_security(self) -> Security:
        """What a client needs to connect (nothing for these plaintext services)."""
        return Security()

    def _endpoints(self, state: dict) -> Endpoints:
        return Endpoints(
            f"127.0.0.1:{state['kafka']['port']}", f"{self.redis_scheme}://127.0.0.1:{state['redis']['port']}/0"
        )

    def endpoints(self) -> Endpoints | None:
        """Endpoints of the running services, or ``None`` when not both run."""
        state = self._read_state()
        if self._kafka_running(state) and self._redis_running(state):
            return self._endpoints(state)
        return None

    def up(self, timeout: float = 180.0) -> Endpoints:
        """Start whatever is not running yet and wait until both answer."""
        state = self._read_state()
        started_kafka = False
        if not self._kafka_running(state):
            state["kafka"] = self._start_kafka()
            self._write_state(state)
            started_kafka = True
        elif state["kafka"].get("version", self.kafka_version) != self.kafka_version:
            log.warning(
                "reusing the Kafka %s broker already running under %s, not %s (`streamrec services down` stops it)",
                state["kafka"]["version"], self.state_dir, self.kafka_version,
            )  # fmt: skip
        if not self._redis_running(state):
            state["redis"] = self._start_redis()
            self._write_state(state)
        if started_kafka:
            self._wait_kafka(state["kafka"], timeout)
        return self._endpoints(state)

    def down(self) -> dict[str, bool]:
        """Stop the processes this state directory started (by PID); leave data."""
        state = self._read_state()
        stopped = {
            "kafka": _stop_pid(state.get("kafka", {}).get("pid", 0), "kafka.Kafka"),
            "redis": _stop_pid(state.get("redis", {}).get("pid", 0), "redis-server"),
        }
        for name in ("kafka", "redis"):
            if name in state:
                state[name]["pid"] = None
        if state:
            self._write_state(state)
        return stopped

    def restart_kafka(self, timeout: float = 180.0) -> None:
        """Stop the broker and start it again on the same ports and data (fault tests)."""
        state = self._read_state()
        k = state["kafka"]
        _stop_pid(k["pid"], "kafka.Kafka")
        state["kafka"] = self._start_kafka(port=k["port"], cport=k["controller_port"])
        self._write_state(state)
        self._wait_kafka(state["kafka"], timeout)

    def stop_redis(self) -> None:
        """Stop Redis (fault tests); :meth:`start_redis` brings it back on the same port."""
        state = self._read_state()
        _stop_pid(state["redis"]["pid"], "redis-server")

    def start_redis(self) -> None:
        state = self._read_state()
        state["redis"] = self._start_redis(port=state["redis"]["port"])
        self._write_state(state)

    # -- Kafka ----------------------------------------------------------------------------

    def _server_properties(self, port: int, cport: int, kdir: Path) -> str:
        """The broker's ``server.properties``: clients on ``port``, the controller on ``cport``."""
        return _SERVER_PROPERTIES.format(port=port, cport=cport, data=kdir / "data")

    def _format_options(self) -> list[str]:
        """Extra options of the storage format (e.g. SCRAM users)."""
        return []

    def _start_kafka(self, port: int | None = None, cport: int | None = None) -> dict:
        java = shutil.which("java")
        if java is None:
            raise ServiceError(
                "java is not installed (Kafka needs Java 17): install a JDK, or set KAFKA_BOOTSTRAP_SERVERS."
            )
        libs = ensure_kafka_jars(self.kafka_version)
        kdir = self.state_dir / "kafka"
        (kdir / "logs").mkdir(parents=True, exist_ok=True)
        self._check_data_version(kdir)
        port = port or _free_port()
        cport = cport or _free_port()
        while cport == port:
            cport = _free_port()
        props = kdir / "server.properties"
        props.touch(mode=0o600)  # it may hold passwords
        props.write_text(self._server_properties(port, cport, kdir))
        log_config, log_text, log_option = kafka_log_config(self.kafka_version, kdir)
        log_config.write_text(log_text)
        jvm = [
            "-Xms256m", f"-Xmx{self.kafka_heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true", f"-Dkafka.logs.dir={kdir / 'logs'}", log_option,
        ]  # fmt: skip
        classpath = f"{libs}/*"
        cluster_file = kdir / "cluster.id"
        if not cluster_file.exists():
            cluster_file.write_text(base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="))
        fmt = subprocess.run(
            [java, *jvm, "-cp", classpath, "kafka.tools.StorageTool", "format",
             # "=": a random id may start with "-", which argparse would take for an option
             f"--cluster-id={cluster_file.read_text().strip()}", "-c", str(props), "--ignore-formatted",
             *self._format_options()],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if fmt.returncode != 0:
            raise ServiceError(f"formatting Kafka storage failed:\n{fmt.stdout[-1500:]}{fmt.stderr[-1500:]}")
        (kdir / "data-version").write_text(self.kafka_version)  # no newer release ran on it (checked above)
        out = open(kdir / "logs" / "stdout.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [java, *jvm, "-cp", classpath, "kafka.Kafka", str(props)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        out.close()
        return {
            "pid": proc.pid,
            "port": port,
            "controller_port": cport,
            "version": self.kafka_version,
            "log": str(kdir / "logs" / "server.log"),
            "started_at": time.time(),
        }

    def _check_data_version(self, kdir: Path) -> None:
        """Refuse data that a newer minor release ran on: an older broker may not know its metadata version."""
        version_file = kdir / "data-version"
        if not version_file.exists():
            return
        newest = version_file.read_text().strip()
        if _VERSION.fullmatch(newest) and _version_tuple(newest)[:2] > _version_tuple(self.kafka_version)[:2]:
            raise ServiceError(
                f"the Kafka data in {kdir / 'data'} was last used by Kafka {newest}, which an older broker "
                f"({self.kafka_version}) may not read: set STREAMREC_KAFKA_VERSION={newest}, use another state "
                f"folder, or remove {kdir / 'data'} and {version_file} to start empty"
            )

    def _wait_kafka(self, k: dict, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        logfile = Path(k["log"])
        while time.monotonic() < deadline:
            if not _alive(k["pid"], "kafka.Kafka"):
                _reap(k["pid"])
                tail = logfile.read_text(errors="replace")[-3000:] if logfile.exists() else ""
                raise ServiceError(f"the Kafka broker exited during start-up; log tail:\n{tail}")
            if _port_open(k["port"]) and self._broker_answers(k["port"], self.client_security()):
                return
            time.sleep(0.5)
        raise ServiceError(
            f"the Kafka broker did not answer on 127.0.0.1:{k['port']} within {timeout:.0f} s; see {logfile}"
        )

    @staticmethod
    def _broker_answers(port: int, security: Security | None = None) -> bool:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        config = security.kafka_python_config() if security is not None else {}
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=5000, client_id="streamrec-probe", **config
            )
        except (KafkaError, OSError, ValueError):
            return False
        try:
            admin.list_topics()
            return True
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()

    # -- Redis ------------------------------------------------------------------------------

    def _redis_options(self, port: int, rdir: Path) -> list[str]:
        """``redis-server`` options that say where and how it listens."""
        return ["--port", str(port)]

    def _start_redis(self, port: int | None = None) -> dict:
        server = ensure_redis_server()
        rdir = self.state_dir / "redis"
        rdir.mkdir(parents=True, exist_ok=True)
        port = port or _free_port()
        pidfile = rdir / "redis.pid"
        pidfile.unlink(missing_ok=True)
        cmd = [
            server, *self._redis_options(port, rdir), "--bind", "127.0.0.1", "--protected-mode", "yes",
            "--save", "", "--appendonly", "no", "--daemonize", "yes",
            "--pidfile", str(pidfile), "--dir", str(rdir), "--logfile", str(rdir / "redis.log"),
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(f"redis-server failed to start: {result.stdout}{result.stderr}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if pidfile.exists() and pidfile.read_text().strip() and _port_open(port):
                pid = int(pidfile.read_text().strip())
                return {"pid": pid, "port": port, "log": str(rdir / "redis.log")}
            time.sleep(0.1)
        raise ServiceError(f"redis-server did not answer on 127.0.0.1:{port}; see {rdir / 'redis.log'}")


class LocalRedis:
    """One Redis server on loopback and nothing else (tests of the read step need no broker).

    Stopped by the PID it started. Examples: ``with LocalRedis(folder) as redis: redis.url``.
    """

    def __init__(self, state_dir: str | Path) -> None:
        self._services = LocalServices(state_dir)
        self.pid: int | None = None
        self.url = ""

    def start(self) -> LocalRedis:
        state = self._services._start_redis()
        self.pid, self.url = state["pid"], f"redis://127.0.0.1:{state['port']}/0"
        return self

    def stop(self) -> None:
        if self.pid is not None:
            _stop_pid(self.pid, "redis-server")
            self.pid, self.url = None, ""

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def resolve_services(settings: Settings, state_dir: str | Path | None = None, start: bool = True) -> Settings:
    """Settings pointing at usable services: the configured ones, else local ones.

    When both ``KAFKA_BOOTSTRAP_SERVERS`` and ``REDIS_URL`` are set they are used
    as they are. Otherwise the local services that ``streamrec services up`` (or
    the demo) left running under ``state_dir`` are used; when they do not run,
    they are started if ``start`` is true, and :class:`ServiceError` says what
    to do if not. Whichever of the two was configured still wins.
    """
    if settings.kafka_bootstrap_servers and settings.redis_url:
        return settings
    services = LocalServices(state_dir)
    local = services.endpoints()
    if local is None:
        if not start:
            raise ServiceError(
                "KAFKA_BOOTSTRAP_SERVERS and REDIS_URL are not set and no local services run "
                f"(state in {services.state_dir}): run `streamrec services up` or `streamrec demo` first"
            )
        local = services.up()
    return settings.with_services(
        settings.kafka_bootstrap_servers or local.kafka_bootstrap_servers,
        settings.redis_url or local.redis_url,
    )
