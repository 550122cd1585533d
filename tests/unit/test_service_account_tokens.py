"""ServiceAccount tokens: the claims the real server issues, and what verification refuses. Pure
(PyJWT and cryptography, no server)."""
from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from kubeweft.lab.apiserver import tokens
from kubeweft.lab.apiserver.access import validate_token_request
from kubeweft.lab.errors import APIError


@pytest.fixture(scope="module")
def signer():
    return tokens.Signer.generate()


def header(token: str) -> dict:
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_claims_are_the_real_servers():
    bound = tokens.Bound("Pod", "web-0", "pod-uid", "node1", "node-uid")
    c = tokens.plan_claims("team", "reader", "sa-uid", ["api"], 1000, 3600, bound, jti="j1")
    assert c == {"aud": ["api"], "exp": 4600, "iat": 1000, "nbf": 1000, "iss": tokens.ISSUER, "jti": "j1",
                 "sub": "system:serviceaccount:team:reader",
                 "kubernetes.io": {"namespace": "team", "serviceaccount": {"name": "reader", "uid": "sa-uid"},
                                   "pod": {"name": "web-0", "uid": "pod-uid"},
                                   "node": {"name": "node1", "uid": "node-uid"}}}
    plain = tokens.plan_claims("team", "reader", "sa-uid", ["api"], 1000, 600)
    assert set(plain["kubernetes.io"]) == {"namespace", "serviceaccount"}


def test_issue_and_verify(signer):
    now = int(time.time())
    token = signer.issue(tokens.plan_claims("team", "reader", "u", list(tokens.API_AUDIENCES), now, 600))
    assert header(token) == {"alg": "ES256", "kid": signer.kid}
    claims = signer.verify(token)
    assert claims["sub"] == "system:serviceaccount:team:reader"
    # several audiences: one of them being the API server's is enough
    token = signer.issue(tokens.plan_claims("team", "reader", "u", ["vault", tokens.ISSUER], now, 600))
    assert signer.verify(token)["aud"] == ["vault", tokens.ISSUER]


@pytest.mark.parametrize("change", ["expired", "audience", "not-yet", "issuer", "sub"])
def test_verify_refuses(signer, change):
    now = int(time.time())
    claims = tokens.plan_claims("team", "reader", "u", list(tokens.API_AUDIENCES), now, 600)
    if change == "expired":
        claims.update(iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    elif change == "audience":
        claims["aud"] = ["vault"]
    elif change == "not-yet":
        claims["nbf"] = now + 3600
    elif change == "issuer":
        claims["iss"] = "https://elsewhere"
    else:
        claims["sub"] = "system:serviceaccount:team:admin"
    with pytest.raises(tokens.InvalidToken):
        signer.verify(signer.issue(claims))


def test_verify_refuses_another_key_and_other_algorithms(signer):
    claims = tokens.plan_claims("team", "reader", "u", list(tokens.API_AUDIENCES), int(time.time()), 600)
    with pytest.raises(tokens.InvalidToken):
        signer.verify(tokens.Signer.generate().issue(claims))
    with pytest.raises(tokens.InvalidToken):
        signer.verify(jwt.encode(claims, "shared-secret", algorithm="HS256"))


@pytest.mark.parametrize("spec,message", [
    ({"expirationSeconds": 10}, ("spec.expirationSeconds: Invalid value: 10: may not specify a duration less "
                                "than 10 minutes")),
    ({"expirationSeconds": 1 << 33}, "may not specify a duration larger than 2^32 seconds"),
    ({"boundObjectRef": {"kind": "ConfigMap", "name": "x"}}, ('spec.boundObjectRef.kind: Invalid value: '
                                                             '"ConfigMap"')),
])
def test_token_request_validation(spec, message):
    with pytest.raises(APIError) as e:
        validate_token_request(spec, "reader")
    assert e.value.code == 422
    assert message in e.value.message
    assert e.value.message.startswith('TokenRequest.authentication.k8s.io "reader" is invalid: ')
    validate_token_request({"expirationSeconds": 600, "audiences": ["x"]}, "reader")


def test_legacy_tokens(signer):
    claims = tokens.plan_legacy_claims("team", "reader", "u", "reader-token")
    assert claims["sub"] == "system:serviceaccount:team:reader" and "exp" not in claims and "aud" not in claims
    token = signer.issue(claims)
    assert tokens.unverified_issuer(token) == tokens.LEGACY_ISSUER
    assert signer.verify_legacy(token)["kubernetes.io/serviceaccount/secret.name"] == "reader-token"
    with pytest.raises(tokens.InvalidToken):
        signer.verify(token)                     # not a bound token: no audience, no expiry
    with pytest.raises(tokens.InvalidToken):
        tokens.Signer.generate().verify_legacy(token)
