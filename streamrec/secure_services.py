"""Local Kafka over SASL_SSL (SCRAM) and Redis over TLS with an ACL user, for end-to-end security tests.

:func:`make_certificates` makes a private certificate authority and a server
certificate for ``127.0.0.1``/``localhost`` with ``openssl``, and the broker's
PKCS12 keystore and truststore with ``openssl`` and ``keytool`` (the JDK's).

:class:`SecureLocalServices` is :class:`~streamrec.services.LocalServices`
configured the way a production cluster is:

- the broker's only client listener is ``SASL_SSL`` with ``SCRAM-SHA-512``
  (the broker talks to itself through it too, as its own SCRAM user); the
  SCRAM users are written into the metadata log when the storage is formatted
  (``kafka-storage format --add-scram``, KIP-900); the KRaft controller
  listener stays plaintext on loopback and is not advertised;
- Redis listens only on a TLS port (``--port 0 --tls-port``); its ``default``
  user is off, and one ACL user may touch only the keys under a prefix.

The servers read their passwords from files readable by their owner only
(``server.properties``, ``redis.conf``). The SCRAM users are created by the
storage-format command, which takes them as arguments (Kafka has no other way
before the broker first starts); that command runs for a few seconds only.

Examples
--------
>>> import tempfile
>>> certs = make_certificates(tempfile.mkdtemp(), "changeit-1234")
>>> sorted(p.name for p in certs.folder.iterdir() if p.suffix in (".pem", ".p12"))
['ca-key.pem', 'ca.pem', 'server-key.pem', 'server.p12', 'server.pem', 'truststore.p12']
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from streamrec.security import Security
from streamrec.services import BROKER_COMMON, LocalServices, ServiceError

__all__ = ["Certificates", "SecureLocalServices", "make_certificates"]

MECHANISM = "SCRAM-SHA-512"
_BROKER_USER = "broker"

_SECURE_PROPERTIES = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{cport}
listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=SASL_SSL://127.0.0.1:{port}
inter.broker.listener.name=SASL_SSL
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms={mechanism}
sasl.mechanism.inter.broker.protocol={mechanism}
listener.name.sasl_ssl.{mechanism_lower}.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="{broker_user}" password="{broker_password}";
ssl.keystore.type=PKCS12
ssl.keystore.location={keystore}
ssl.keystore.password={store_password}
ssl.key.password={store_password}
ssl.truststore.type=PKCS12
ssl.truststore.location={truststore}
ssl.truststore.password={store_password}
ssl.client.auth=none
ssl.endpoint.identification.algorithm=https
"""
_SECURE_PROPERTIES += BROKER_COMMON


@dataclass(frozen=True)
class Certificates:
    """A private CA, a server certificate for 127.0.0.1/localhost, and the broker's stores."""

    folder: Path
    password: str = field(repr=False)

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server-key.pem"

    @property
    def keystore(self) -> Path:
        return self.folder / "server.p12"

    @property
    def truststore(self) -> Path:
        return self.folder / "truststore.p12"


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise ServiceError(f"{what} failed (exit {result.returncode}): {result.stderr[-1500:]}")


def make_certificates(folder: str | Path, password: str, days: int = 7) -> Certificates:
    """Create the CA, the server certificate and key, and PKCS12 keystore and truststore in ``folder``.

    EC P-256 keys (fast to make). The store ``password`` protects the PKCS12
    files; the PEM key is unencrypted and readable by its owner only.
    """
    for tool in ("openssl", "keytool"):
        if shutil.which(tool) is None:
            raise ServiceError(f"{tool} is not installed (openssl from the openssl package, keytool from the JDK)")
    certs = Certificates(Path(folder), password)
    certs.folder.mkdir(parents=True, exist_ok=True)
    d = certs.folder
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(["openssl", "req", "-x509", *ec, "-keyout", str(d / "ca-key.pem"), "-out", str(certs.ca),
          "-days", str(days), "-subj", "/CN=streamrec test CA"], "making the CA")  # fmt: skip
    _run(["openssl", "req", *ec, "-keyout", str(certs.server_key), "-out", str(d / "server.csr"),
          "-subj", "/CN=localhost"], "making the server key")  # fmt: skip
    (d / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
    )
    _run(["openssl", "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(certs.ca),
          "-CAkey", str(d / "ca-key.pem"), "-CAcreateserial", "-out", str(certs.server_cert),
          "-days", str(days), "-extfile", str(d / "san.ext")], "signing the server certificate")  # fmt: skip
    for key in (d / "ca-key.pem", certs.server_key):
        key.chmod(0o600)
    _run(["openssl", "pkcs12", "-export", "-in", str(certs.server_cert), "-inkey", str(certs.server_key),
          "-certfile", str(certs.ca), "-name", "broker", "-out", str(certs.keystore),
          "-passout", f"pass:{password}"], "writing the PKCS12 keystore")  # fmt: skip
    certs.truststore.unlink(missing_ok=True)
    _run(["keytool", "-importcert", "-noprompt", "-alias", "streamrec-ca", "-file", str(certs.ca),
          "-keystore", str(certs.truststore), "-storetype", "PKCS12", "-storepass", password],
         "writing the truststore")  # fmt: skip
    return certs


class SecureLocalServices(LocalServices):
    """A broker that only speaks SASL_SSL (SCRAM-SHA-512) and a Redis that only speaks TLS, with ACL users.

    Parameters
    ----------
    state_dir
        Where certificates, configuration, data, logs and PIDs live.
    kafka_user, kafka_password
        The SCRAM user clients authenticate as.
    redis_user, redis_password
        The Redis ACL user; it may run read, write and connection commands on
        keys matching ``redis_keys`` only.
    redis_keys
        Key pattern of the ACL user (e.g. ``"streamrec:*"``).
    kafka_heap, kafka_version
        As for :class:`~streamrec.services.LocalServices` (the version defaults to
        ``STREAMREC_KAFKA_VERSION``, else :data:`~streamrec.services.KAFKA_VERSION`).
    """

    redis_scheme = "rediss"

    def __init__(
        self,
        state_dir: str | Path,
        kafka_user: str,
        kafka_password: str,
        redis_user: str,
        redis_password: str,
        redis_keys: str = "*",
        kafka_heap: str = "512m",
        kafka_version: str | None = None,
    ) -> None:
        super().__init__(state_dir, kafka_heap, kafka_version)
        for name, value in (("kafka_user", kafka_user), ("redis_user", redis_user), ("redis_keys", redis_keys)):
            if not value or any(c in value for c in " ,=[]\"'\n"):
                raise ValueError(f"{name}={value!r}: use letters, digits, '-', '_', ':' and '*' only")
        for name, value in (("kafka_password", kafka_password), ("redis_password", redis_password)):
            if len(value) < 8 or any(c in value for c in " ,=[]\"'\n\\"):
                raise ValueError(f"{name}: at least 8 characters, without spaces, quotes, ',', '=', brackets")
        self.kafka_user = kafka_user
        self._kafka_password = kafka_password
        self.redis_user = redis_user
        self._redis_password = redis_password
        self.redis_keys = redis_keys
        self._broker_password = f"{kafka_password}-broker"
        self._store_password = f"{kafka_password}-store"

    def __repr__(self) -> str:
        return f"SecureLocalServices({str(self.state_dir)!r}, kafka_user={self.kafka_user!r}, redis_user={self.redis_user!r})"

    @property
    def certificates(self) -> Certificates:
        """The certificates, made on first use."""
        folder = self.state_dir / "tls"
        certs = Certificates(folder, self._store_password)
        if not (certs.truststore.exists() and certs.keystore.exists()):
            certs = make_certificates(folder, self._store_password)
        return certs

    def client_security(self) -> Security:
        """Client settings for these services: SASL_SSL with SCRAM, Redis ACL user, the private CA."""
        ca = str(self.certificates.ca)
        return Security(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism=MECHANISM,
            kafka_sasl_username=self.kafka_user,
            kafka_sasl_password=self._kafka_password,
            kafka_ssl_cafile=ca,
            redis_username=self.redis_user,
            redis_password=self._redis_password,
            redis_ssl_ca_certs=ca,
        )

    def _server_properties(self, port: int, cport: int, kdir: Path) -> str:
        certs = self.certificates
        return _SECURE_PROPERTIES.format(
            port=port,
            cport=cport,
            data=kdir / "data",
            mechanism=MECHANISM,
            mechanism_lower=MECHANISM.lower(),
            broker_user=_BROKER_USER,
            broker_password=self._broker_password,
            keystore=certs.keystore,
            truststore=certs.truststore,
            store_password=certs.password,
        )

    def _format_options(self) -> list[str]:
        return [
            "--add-scram", f"{MECHANISM}=[name={_BROKER_USER},password={self._broker_password}]",
            "--add-scram", f"{MECHANISM}=[name={self.kafka_user},password={self._kafka_password}]",
        ]  # fmt: skip

    def _redis_options(self, port: int, rdir: Path) -> list[str]:
        certs = self.certificates
        conf = rdir / "redis.conf"
        conf.touch(mode=0o600)
        conf.write_text(
            "port 0\n"
            f"tls-port {port}\n"
            f"tls-cert-file {certs.server_cert}\n"
            f"tls-key-file {certs.server_key}\n"
            f"tls-ca-cert-file {certs.ca}\n"
            "tls-auth-clients no\n"
            "user default off\n"
            f"user {self.redis_user} on >{self._redis_password} ~{self.redis_keys} "
            "+@read +@write +@keyspace +@connection -@dangerous +client|setname "
            "+fcall +fcall_ro +function|load +time\n"  # the read step: the worker loads it, everyone calls it
        )
        return [str(conf)]  # the configuration file must come first
