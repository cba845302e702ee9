# The simulator's private PKI for the locked-down broker (issue 5, SPEC 3): one EC P-256 CA, a
# server certificate for the loopback broker, and client certificates for the host and for each
# terminal (CN = device id). PEM files in one directory; the CA and each terminal's certificate
# and key also in DER, because MicroPython's ssl takes only DER, for `cadata` and for
# `load_cert_chain` alike (measured on 1.29 / Mbed TLS 3.6.6: PEM keys and certs raise
# "invalid key"). The DER twin of X.pem is X.der.
#
#   certs/ca.pem ca.der ca-key.pem            certs/server/cert.pem key.pem
#   certs/host/cert.pem key.pem               certs/devices/<id>/cert.pem cert.der key.pem key.der
#
# Idempotent: a certificate is kept while it verifies under the current CA, matches its key, names
# the right identity and is not about to expire; anything else is issued again (a new CA therefore
# reissues every leaf). Private keys are 0600 and owned by whoever runs this: the brokers we start
# run as that same user (`user root` when root, see host_sim/mosquitto.py and
# tests/support/broker.py), so no key is ever made readable by another account.
import datetime
import ipaddress
import os
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from host_sim.files import write_atomic
from host_sim.registry import HOST_USERNAME, RegistryError, check_id

CA_DAYS = 3650
LEAF_DAYS = 730
RENEW_DAYS = 30  # a certificate this close to expiry is issued again
BACKDATE_S = 3600  # tolerate clocks a little behind the issuing machine
SERVER_HOSTS = ("127.0.0.1", "localhost")
CA_NAME = "terminal-agent sim CA"

_SERVER = "server"
_CLIENT = "client"


class CertError(ValueError):
    def __init__(self, code, message):
        super().__init__(code + ": " + message)
        self.code = code
        self.message = message


def default_dir():
    """certs/ in the repository root (git-ignored)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "certs")


class CertStore:
    """The PEM files of one certificate directory; ensure_* create or keep them."""

    def __init__(self, directory=None, clock=time.time):
        self.dir = os.path.abspath(directory or default_dir())
        self.clock = clock
        self.ca_key = os.path.join(self.dir, "ca-key.pem")
        self.ca_pem = os.path.join(self.dir, "ca.pem")
        self.ca_der = os.path.join(self.dir, "ca.der")
        self._ca = None  # (certificate, private key) once loaded or made

    # ------------------------------------------------------------ paths

    def server_paths(self):
        return _pair(os.path.join(self.dir, "server"))

    def host_paths(self):
        return _pair(os.path.join(self.dir, "host"))

    def device_paths(self, device_id):
        try:
            check_id(device_id, "device_id")
        except RegistryError as e:
            raise CertError("bad_id", e.message)
        if device_id == HOST_USERNAME:
            raise CertError("reserved_id", "%r is the host's identity" % device_id)
        if device_id in (".", ".."):
            raise CertError("bad_id", "%r cannot name a directory" % device_id)
        # Ids have no "/" (check_id), so the name cannot leave the directory.
        return _pair(os.path.join(self.dir, "devices", device_id))

    def device_broker(self, device_id):
        """The TLS part of a device config's broker section (absolute PEM paths; on
        MicroPython the device loads the .der twin of each)."""
        cert, key = self.device_paths(device_id)
        return {"tls": True, "ca": self.ca_pem, "cert": cert, "key": key}

    # ------------------------------------------------------------ ensure

    def ensure(self, devices=(), hosts=SERVER_HOSTS):
        """CA, server, host and the given devices; returns {"written": [...], "kept": [...]}."""
        report = {"written": [], "kept": []}

        def note(name, wrote):
            report["written" if wrote else "kept"].append(name)

        note("ca", self.ensure_ca())
        note("server", self.ensure_server(hosts))
        note("host", self.ensure_host())
        for dev in devices:
            note("device:" + dev, self.ensure_device(dev))
        return report

    def ensure_ca(self):
        """Loads the CA, or makes a new one; True when files were written."""
        self._ca = None
        ca = self._load_ca()
        wrote = False
        if ca is None:
            ca = self._new_ca()
            wrote = True
        self._ca = ca
        der = ca[0].public_bytes(serialization.Encoding.DER)
        if _read(self.ca_der) != der:
            _write(self.ca_der, der, 0o644)
            wrote = True
        return wrote

    def ensure_server(self, hosts=SERVER_HOSTS):
        names = _san_names(hosts)
        cert, key = self.server_paths()
        return self._ensure_leaf(cert, key, "broker", _SERVER, names, der=False)

    def ensure_host(self):
        cert, key = self.host_paths()
        return self._ensure_leaf(cert, key, HOST_USERNAME, _CLIENT, None, der=False)

    def ensure_device(self, device_id):
        cert, key = self.device_paths(device_id)
        return self._ensure_leaf(cert, key, device_id, _CLIENT, None, der=True)

    # ------------------------------------------------------------ CA

    def _now(self):
        return datetime.datetime.fromtimestamp(int(self.clock()), datetime.timezone.utc)

    def _load_ca(self):
        cert, key = _load_pair(self.ca_pem, self.ca_key)
        if cert is None:
            return None
        try:
            cert.verify_directly_issued_by(cert)
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            return None
        if not bc.ca or not self._fresh(cert):
            return None
        return cert, key

    def _new_ca(self):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = self._now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(seconds=BACKDATE_S))
                .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(_key_usage(cert_sign=True), critical=True)
                .add_extension(ski, critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                    ski), critical=False)
                .sign(key, hashes.SHA256()))
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        # Key first: a crash before the certificate is written leaves a pair that does not
        # match, which the next run replaces.
        _write(self.ca_key, _key_pem(key), 0o600)
        _write(self.ca_pem, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cert, key

    def _fresh(self, cert):
        now = self._now()
        return cert.not_valid_before_utc <= now and \
            cert.not_valid_after_utc - now > datetime.timedelta(days=RENEW_DAYS)

    # ------------------------------------------------------------ leaves

    def _ensure_leaf(self, cert_path, key_path, cn, kind, names, der):
        if self._ca is None:
            self.ensure_ca()
        pair = self._leaf_ok(cert_path, key_path, cn, kind, names)
        if pair is not None:
            return der and _write_der_twins(cert_path, key_path, *pair)
        ca_cert, ca_key = self._ca
        key = ec.generate_private_key(ec.SECP256R1())
        now = self._now()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if kind == _SERVER else \
            ExtendedKeyUsageOID.CLIENT_AUTH
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(ca_cert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(seconds=BACKDATE_S))
             .not_valid_after(min(now + datetime.timedelta(days=LEAF_DAYS),
                                  ca_cert.not_valid_after_utc))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(_key_usage(cert_sign=False), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                            critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                 ca_ski), critical=False))
        if names:
            b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        leaf_dir = os.path.dirname(cert_path)
        # makedirs gives its mode to the last level only: devices/ is made on its own first.
        os.makedirs(os.path.dirname(leaf_dir), mode=0o700, exist_ok=True)
        os.makedirs(leaf_dir, mode=0o700, exist_ok=True)
        _write(key_path, _key_pem(key), 0o600)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        if der:
            _write_der_twins(cert_path, key_path, cert, key)
        return True

    def _leaf_ok(self, cert_path, key_path, cn, kind, names):
        """(certificate, key) when the pair may be kept, else None."""
        cert, key = _load_pair(cert_path, key_path)
        if cert is None:
            return None
        try:
            cert.verify_directly_issued_by(self._ca[0])
            subject = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            sans = cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value if names else None
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            return None
        want = ExtendedKeyUsageOID.SERVER_AUTH if kind == _SERVER else \
            ExtendedKeyUsageOID.CLIENT_AUTH
        if [a.value for a in subject] != [cn] or list(eku) != [want]:
            return None
        if names and set(sans) != set(names):
            return None
        return (cert, key) if self._fresh(cert) else None


# ---------------------------------------------------------------- helpers

def der_twin(path):
    """The DER file beside a PEM file: X.pem -> X.der."""
    return (path[:-4] if path.endswith(".pem") else path) + ".der"


def _pair(directory):
    return os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")


def _write_der_twins(cert_path, key_path, cert, key):
    """Brings cert.der and key.der in line with the PEM pair; True when a file was written."""
    wrote = False
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    for path, data, mode in ((der_twin(cert_path), cert_der, 0o644),
                             (der_twin(key_path), key_der, 0o600)):
        current = _read(path)
        if current != data or os.stat(path).st_mode & 0o777 != mode:
            _write(path, data, mode)
            wrote = True
    return wrote

def _key_usage(cert_sign):
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False,
                         key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def _san_names(hosts):
    if isinstance(hosts, str) or not hosts:
        raise CertError("bad_hosts", "server hosts must be a non-empty list")
    names = []
    for h in hosts:
        if type(h) is not str or not h or len(h) > 253:
            raise CertError("bad_hosts", "bad server host %r" % (h,))
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
            continue
        except ValueError:
            pass
        labels = h.split(".")
        if any(not label or len(label) > 63 or not all(c.isalnum() or c == "-" for c in label)
               or not label.isascii() for label in labels):
            raise CertError("bad_hosts", "%r is neither an IP address nor a DNS name" % h)
        names.append(x509.DNSName(h.lower()))
    return names


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _load_pair(cert_path, key_path):
    """(certificate, key) when both parse, the key is P-256 and matches; else (None, None)."""
    cert_data, key_data = _read(cert_path), _read(key_path)
    if cert_data is None or key_data is None:
        return None, None
    try:
        cert = x509.load_pem_x509_certificate(cert_data)
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError):
        return None, None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        return None, None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, pub) != \
            cert.public_key().public_bytes(serialization.Encoding.DER, pub):
        return None, None
    if os.stat(key_path).st_mode & 0o077:
        return None, None  # a key others could have read is replaced, not trusted
    return cert, key


def _write(path, data, mode):
    """Atomic write with the final mode set before the data lands (keys never world-readable)."""
    try:
        write_atomic(path, data, mode)
    except OSError as e:
        raise CertError("io", "cannot write %s: %s" % (path, e))
