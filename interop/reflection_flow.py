"""Drives the whole flow from Python with grpcio, discovering both services only through
server reflection (no .proto files, no generated code), the way grpcurl does.

Usage: python reflection_flow.py AUTH_ADDR USERINFO_ADDR DEV_CREDENTIALS_ENV
Exits non-zero on the first behaviour that differs from the contract.
"""

import base64
import sys
import time

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


class Reflected:
    """A channel plus a descriptor pool fed by the server's reflection service."""

    def __init__(self, addr):
        self.channel = grpc.insecure_channel(addr)
        self.db = ProtoReflectionDescriptorDatabase(self.channel)
        self.pool = descriptor_pool.DescriptorPool(self.db)

    def services(self):
        return set(self.db.get_services())

    def message(self, full_name, **fields):
        cls = message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))
        return json_format.ParseDict(fields, cls())

    def call(self, service, method, metadata=(), **fields):
        svc = self.pool.FindServiceByName(service)
        m = svc.FindMethodByName(method)
        request = json_format.ParseDict(fields, message_factory.GetMessageClass(m.input_type)())
        response_cls = message_factory.GetMessageClass(m.output_type)
        stub = self.channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=lambda r: r.SerializeToString(),
            response_deserializer=response_cls.FromString,
        )
        response = stub(request, metadata=list(metadata), timeout=10)
        return json_format.MessageToDict(response, preserving_proto_field_name=True)

    def error_reason(self, err):
        """The google.rpc.ErrorInfo reason of a failed call, decoded through reflection too."""
        details = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
        status_cls = message_factory.GetMessageClass(self.pool.FindMessageTypeByName("google.rpc.Status"))
        info_cls = message_factory.GetMessageClass(self.pool.FindMessageTypeByName("google.rpc.ErrorInfo"))
        status = status_cls.FromString(details)
        for any_detail in status.details:
            if any_detail.type_url.endswith("google.rpc.ErrorInfo"):
                info = info_cls.FromString(any_detail.value)
                return info.reason, dict(info.metadata)
        raise AssertionError("no ErrorInfo in status details")


def expect(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}")


def main():
    auth_addr, userinfo_addr, env_file = sys.argv[1:4]
    env = dict(
        line.strip().split("=", 1) for line in open(env_file) if "=" in line and not line.startswith("#")
    )
    wallet = (("authorization", f"Bearer {env['WALLET_TOKEN']}"),)
    app_id, secret = env["DEMO_APP_ID"], env["DEMO_APP_SECRET"]
    basic = (("authorization", "Basic " + base64.b64encode(f"{app_id}:{secret}".encode()).decode()),)

    auth, userinfo = Reflected(auth_addr), Reflected(userinfo_addr)
    expect(
        {"miniprogram.auth.v1.AuthorizationService", "miniprogram.auth.v1.TokenService", "grpc.health.v1.Health"}
        <= auth.services(),
        "auth-service lists its services and health through reflection",
    )
    expect(
        {"miniprogram.userinfo.v1.UserInfoService", "grpc.health.v1.Health"} <= userinfo.services(),
        "userinfo-service lists its services and health through reflection",
    )
    health = userinfo.call("grpc.health.v1.Health", "Check")
    expect(health.get("status") == "SERVING", "health says SERVING")

    authz = "miniprogram.auth.v1.AuthorizationService"
    user = "demo-user-1"
    prompted = auth.call(authz, "RequestAuthorization", wallet, user_id=user, app_id=app_id,
                         scopes=["SCOPE_USER_INFO"], trigger="TRIGGER_USER_TAP")
    if "prompt" in prompted:
        granted = auth.call(authz, "ResolvePrompt", wallet, prompt_id=prompted["prompt"]["prompt_id"],
                            user_id=user, decision="DECISION_ALLOW")
    else:
        granted = prompted
    consent_token = granted["grant"]["consent_token"]
    info = userinfo.call("miniprogram.userinfo.v1.UserInfoService", "GetOpenUserInfo", consent_token=consent_token)
    expect(set(info) <= {"avatar", "nick_name", "gender", "country_code", "province", "city"},
           f"GetOpenUserInfo returns only public fields: {sorted(info)}")
    expect(info.get("nick_name") == "Nana", "the demo user's nickname comes back")

    try:
        auth.call(authz, "RequestAuthorization", wallet, user_id="demo-user-2", app_id=app_id,
                  scopes=["SCOPE_USER_INFO"], trigger="TRIGGER_APP_LAUNCH")
        raise AssertionError("a launch-time prompt was not refused")
    except grpc.RpcError as err:
        reason, _ = auth.error_reason(err)
        expect(err.code() == grpc.StatusCode.FAILED_PRECONDITION and reason == "AUTHORIZATION_AT_LAUNCH",
               "a prompt at launch is refused with AUTHORIZATION_AT_LAUNCH")

    prompted = auth.call(authz, "RequestAuthorization", wallet, user_id=user, app_id=app_id,
                         scopes=["SCOPE_AUTH_BASE", "SCOPE_PHONE_NUMBER"], trigger="TRIGGER_USER_TAP")
    if "prompt" in prompted:
        prompted = auth.call(authz, "ResolvePrompt", wallet, prompt_id=prompted["prompt"]["prompt_id"],
                             user_id=user, decision="DECISION_ALLOW")
    code = prompted["grant"]["auth_code"]
    tokens = auth.call("miniprogram.auth.v1.TokenService", "ExchangeAuthCode", basic, auth_code=code)
    expect(tokens["user_id"] != user, "the backend gets an app-scoped user id, not the wallet's")
    phone = userinfo.call("miniprogram.userinfo.v1.UserInfoService", "GetPhoneNumber", basic,
                          access_token=tokens["access_token"])
    expect(phone.get("phone_number", "").startswith("+86"), "the phone number comes back under its scope")

    auth.call(authz, "RevokeAuthorization", wallet, user_id=user, app_id=app_id)
    # Revocations reach userinfo-service through its stream: refused within a second.
    deadline = time.monotonic() + 1.0
    while True:
        try:
            userinfo.call("miniprogram.userinfo.v1.UserInfoService", "GetOpenUserInfo", consent_token=consent_token)
        except grpc.RpcError as err:
            reason, metadata = userinfo.error_reason(err)
            expect(reason == "INVALID_AUTH_RELATIONS" and metadata.get("jsapi_code") == "40003",
                   "after withdrawal the consent token is refused with 40003 within a second")
            break
        if time.monotonic() > deadline:
            raise AssertionError("a withdrawn consent token still works after a second")
        time.sleep(0.02)
    print("interop: the whole flow works from Python through reflection")


if __name__ == "__main__":
    main()
