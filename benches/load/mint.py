#!/usr/bin/env python3
"""Mints the load harness's RS256 tokens with no third-party Python package.

    mint.py KEY.pem OUTDIR [COLD_COUNT]

Reads an RSA private key made by `openssl genrsa`, and writes to OUTDIR:
  jwks.json           the public key as a JWKS (authgate fetches it over loopback)
  valid.jwt           grants invoice:read in client_bench's namespace (~650 bytes, like the issue's)
  noperm.jwt          valid, but grants only report:read          -> 403
  expired.jwt         exp an hour ago                             -> 401
  wrongaud.jwt        aud names another API                       -> 401
  badsig.jwt          valid.jwt with a corrupted signature        -> 401
  abac.jwt            also grants invoice:refund, but lists it in abac_required: the gateway asks
                      the IdP's live check (run.sh's abac mode, idp.py answers)
  cold.txt            COLD_COUNT distinct valid tokens, one a line (the cold mode cycles them)
Signing is textbook RSASSA-PKCS1-v1_5 with SHA-256 (CRT), about 1 ms a token in CPython.
"""
import base64, hashlib, json, os, re, subprocess, sys, time

ISSUER = "https://idp.authgate-bench.test"
AUDIENCE = "authgate-bench"
KID = "bench-rs256"
# DER DigestInfo prefix for SHA-256 (RFC 8017, 9.2 note 1).
SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def read_key(path):
    text = subprocess.run(["openssl", "rsa", "-in", path, "-noout", "-text"], check=True,
                          capture_output=True, text=True).stdout
    fields = {}
    for name in ("modulus", "privateExponent", "prime1", "prime2", "exponent1", "exponent2", "coefficient"):
        m = re.search(name + r":\s*\n((?:\s+[0-9a-f:]+\n)+)", text)
        fields[name] = int(re.sub(r"[\s:]", "", m.group(1)), 16)
    e = int(re.search(r"publicExponent: (\d+)", text).group(1))
    return fields, e


class Signer:
    def __init__(self, path):
        f, self.e = read_key(path)
        self.n, self.p, self.q = f["modulus"], f["prime1"], f["prime2"]
        self.dp, self.dq, self.qinv = f["exponent1"], f["exponent2"], f["coefficient"]
        self.k = (self.n.bit_length() + 7) // 8

    def sign(self, msg):
        t = SHA256_PREFIX + hashlib.sha256(msg).digest()
        em = b"\x00\x01" + b"\xff" * (self.k - len(t) - 3) + b"\x00" + t
        m = int.from_bytes(em, "big")
        s1, s2 = pow(m, self.dp, self.p), pow(m, self.dq, self.q)
        h = (self.qinv * (s1 - s2)) % self.p
        return (s2 + h * self.q).to_bytes(self.k, "big")

    def jwt(self, claims):
        header = b64u(json.dumps({"alg": "RS256", "typ": "JWT", "kid": KID}, separators=(",", ":")).encode())
        payload = b64u(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode()
        return f"{header}.{payload}.{b64u(self.sign(signing_input))}"

    def jwks(self):
        n = self.n.to_bytes(self.k, "big")
        e = self.e.to_bytes((self.e.bit_length() + 7) // 8, "big")
        return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": KID, "n": b64u(n), "e": b64u(e)}]}


def claims(now, i=0, **over):
    c = {
        "iss": ISSUER,
        "sub": f"user_{i:06d}",
        "aud": AUDIENCE,
        "azp": "bench",
        "email": f"user{i:06d}@example.com",
        "email_verified": True,  # the gateway sends only verified emails by default
        "iat": now,
        "exp": now + 6 * 3600,
        "permissions": {"client_bench:invoice": ["read", "write"]},
    }
    c.update(over)
    return c


def main():
    key, out = sys.argv[1], sys.argv[2]
    cold = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    s = Signer(key)
    now = int(time.time())
    os.makedirs(out, exist_ok=True)

    def write(name, text):
        with open(os.path.join(out, name), "w") as f:
            f.write(text + "\n")

    write("jwks.json", json.dumps(s.jwks()))
    valid = s.jwt(claims(now))
    write("valid.jwt", valid)
    write("noperm.jwt", s.jwt(claims(now, permissions={"client_bench:report": ["read"]})))
    write("expired.jwt", s.jwt(claims(now, iat=now - 7200, exp=now - 3600)))
    write("wrongaud.jwt", s.jwt(claims(now, aud="another-api")))
    write("abac.jwt", s.jwt(claims(now, permissions={"client_bench:invoice": ["read", "write", "refund"]},
                                   abac_required={"client_bench:invoice": ["refund"]})))
    head, sig = valid.rsplit(".", 1)
    mid = len(sig) // 2
    write("badsig.jwt", head + "." + sig[:mid] + ("A" if sig[mid] != "A" else "B") + sig[mid + 1:])
    with open(os.path.join(out, "cold.txt"), "w") as f:
        for i in range(cold):
            f.write(s.jwt(claims(now, i + 1)) + "\n")
    print(f"minted valid ({len(valid)} bytes), 5 refusal cases, abac and {cold} cold tokens into {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
