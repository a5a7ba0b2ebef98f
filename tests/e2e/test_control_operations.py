"""Every operation of botocore's apigateway model against a real `fastgate serve`, and the
operations that reach the data plane: TestInvokeMethod through the pipeline, VPC links routing
to an upstream group, a stage's client certificate presented to a backend that requires it."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import time

import httpx
import pytest
from botocore.exceptions import ClientError

from conftest import Gateway, wait_until
from test_control_api import client, env  # noqa: F401  (the env fixture: credentials, data dir)

CONFIG = """\
access_log: {path: 'off'}
upstreams:
  pets:
    targets:
      - url: %s
"""


def ok_or_aws_error(call, **kw) -> dict:
    """The answer, or the AWS error it raised (anything but an unknown operation)."""
    try:
        return call(**kw)
    except ClientError as e:
        return {"Error": e.response["Error"]}


def deployed_mock_api(c) -> tuple[dict, str]:
    api = c.create_rest_api(name="ops")
    root = api["rootResourceId"]
    c.put_method(restApiId=api["id"], resourceId=root, httpMethod="GET", authorizationType="NONE")
    c.put_integration(restApiId=api["id"], resourceId=root, httpMethod="GET", type="MOCK",
                      requestTemplates={"application/json": '{"statusCode": 200}'})
    c.put_integration_response(restApiId=api["id"], resourceId=root, httpMethod="GET",
                               statusCode="200", responseTemplates={"application/json": '{"ok": true}'})
    c.put_method_response(restApiId=api["id"], resourceId=root, httpMethod="GET", statusCode="200",
                          responseModels={"application/json": "Empty"})
    c.create_deployment(restApiId=api["id"], stageName="prod")
    return api, root


def test_every_operation_of_the_model_answers(env, upstream):
    """Each of the 124 operations is served: called with real ids through boto3, none
    answers UnknownOperationException (a call may still fail as AWS would, e.g. GetSdk)."""
    g = Gateway(env, CONFIG % upstream.url)
    try:
        c = client(g)
        api, root = deployed_mock_api(c)
        a = api["id"]
        res = c.create_resource(restApiId=a, parentId=root, pathPart="r")
        r = res["id"]
        auth = c.create_authorizer(restApiId=a, name="au", type="TOKEN",
                                   authorizerUri="arn:aws:apigateway:us-east-1:lambda:path/2015-03-31"
                                   "/functions/arn:aws:lambda:us-east-1:123456789012:function:f/invocations",
                                   identitySource="method.request.header.Authorization")
        key = c.create_api_key(name="k", enabled=True)
        plan = c.create_usage_plan(name="p", apiStages=[{"apiId": a, "stage": "prod"}],
                                   quota={"limit": 100, "period": "DAY"})
        cert = c.generate_client_certificate(description="c")
        link = c.create_vpc_link(name="l", targetArns=[
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/pets/0"])
        part = c.create_documentation_part(restApiId=a, location={"type": "API"}, properties='{"a": 1}')
        c.create_documentation_version(restApiId=a, documentationVersion="v1")
        validator = c.create_request_validator(restApiId=a, name="v", validateRequestBody=True)
        c.create_model(restApiId=a, name="M", contentType="application/json",
                       schema='{"type": "object", "properties": {"a": {"type": "string"}}}')
        dep = c.get_deployments(restApiId=a)["items"][0]["id"]
        domain = "api.example.com"
        c.create_domain_name(domainName=domain)
        c.create_base_path_mapping(domainName=domain, restApiId=a, stage="prod", basePath="v1")
        dnaa = c.create_domain_name_access_association(
            domainNameArn=f"arn:aws:apigateway:us-east-1:123456789012:/domainnames/{domain}",
            accessAssociationSourceType="VPCE", accessAssociationSource="vpce-0123")
        arn = f"arn:aws:apigateway:us-east-1::/restapis/{a}"
        m = dict(restApiId=a, resourceId=root, httpMethod="GET")
        patch = [{"op": "replace", "path": "/description", "value": "d"}]
        openapi_doc = c.get_export(restApiId=a, stageName="prod", exportType="oas30",
                                   parameters={"extensions": "integrations"})["body"].read()
        calls = {
            "GetAccount": {}, "UpdateAccount": dict(patchOperations=[
                {"op": "replace", "path": "/cloudwatchRoleArn", "value": "arn:aws:iam::1:role/r"}]),
            "GetRestApis": {}, "GetRestApi": dict(restApiId=a),
            "UpdateRestApi": dict(restApiId=a, patchOperations=patch),
            "PutRestApi": dict(restApiId=a, body=openapi_doc, mode="merge"),
            "ImportRestApi": dict(body=openapi_doc),
            "GetExport": dict(restApiId=a, stageName="prod", exportType="swagger"),
            "GetResources": dict(restApiId=a), "GetResource": dict(restApiId=a, resourceId=r),
            "UpdateResource": dict(restApiId=a, resourceId=r, patchOperations=[
                {"op": "replace", "path": "/pathPart", "value": "r2"}]),
            "GetMethod": m, "UpdateMethod": dict(m, patchOperations=[
                {"op": "replace", "path": "/operationName", "value": "op"}]),
            "GetMethodResponse": dict(m, statusCode="200"),
            "UpdateMethodResponse": dict(m, statusCode="200", patchOperations=[
                {"op": "add", "path": "/responseParameters/method.response.header.x", "value": "true"}]),
            "GetIntegration": m, "UpdateIntegration": dict(m, patchOperations=[
                {"op": "replace", "path": "/timeoutInMillis", "value": "1000"}]),
            "GetIntegrationResponse": dict(m, statusCode="200"),
            "UpdateIntegrationResponse": dict(m, statusCode="200", patchOperations=[
                {"op": "replace", "path": "/selectionPattern", "value": ""}]),
            "TestInvokeMethod": m,
            "GetAuthorizers": dict(restApiId=a), "GetAuthorizer": dict(restApiId=a, authorizerId=auth["id"]),
            "UpdateAuthorizer": dict(restApiId=a, authorizerId=auth["id"], patchOperations=[
                {"op": "replace", "path": "/name", "value": "au2"}]),
            "TestInvokeAuthorizer": dict(restApiId=a, authorizerId=auth["id"],
                                         headers={"Authorization": "x"}),
            "GetDeployments": dict(restApiId=a), "GetDeployment": dict(restApiId=a, deploymentId=dep),
            "UpdateDeployment": dict(restApiId=a, deploymentId=dep, patchOperations=patch),
            "GetStages": dict(restApiId=a), "GetStage": dict(restApiId=a, stageName="prod"),
            "UpdateStage": dict(restApiId=a, stageName="prod", patchOperations=patch),
            "CreateStage": dict(restApiId=a, stageName="beta", deploymentId=dep),
            "FlushStageCache": dict(restApiId=a, stageName="prod"),
            "FlushStageAuthorizersCache": dict(restApiId=a, stageName="prod"),
            "GetModels": dict(restApiId=a), "GetModel": dict(restApiId=a, modelName="M"),
            "GetModelTemplate": dict(restApiId=a, modelName="M"),
            "UpdateModel": dict(restApiId=a, modelName="M", patchOperations=patch),
            "GetRequestValidators": dict(restApiId=a),
            "GetRequestValidator": dict(restApiId=a, requestValidatorId=validator["id"]),
            "UpdateRequestValidator": dict(restApiId=a, requestValidatorId=validator["id"], patchOperations=[
                {"op": "replace", "path": "/name", "value": "v2"}]),
            "GetGatewayResponses": dict(restApiId=a),
            "PutGatewayResponse": dict(restApiId=a, responseType="THROTTLED", statusCode="429"),
            "GetGatewayResponse": dict(restApiId=a, responseType="THROTTLED"),
            "UpdateGatewayResponse": dict(restApiId=a, responseType="THROTTLED", patchOperations=[
                {"op": "replace", "path": "/statusCode", "value": "430"}]),
            "GetDocumentationParts": dict(restApiId=a),
            "GetDocumentationPart": dict(restApiId=a, documentationPartId=part["id"]),
            "UpdateDocumentationPart": dict(restApiId=a, documentationPartId=part["id"], patchOperations=[
                {"op": "replace", "path": "/properties", "value": '{"b": 2}'}]),
            "ImportDocumentationParts": dict(restApiId=a, body=json.dumps({
                "openapi": "3.0.1", "info": {"title": "t", "version": "1"}, "paths": {},
                "x-amazon-apigateway-documentation": {"documentationParts": [
                    {"location": {"type": "API"}, "properties": {"description": "d"}}]}}).encode()),
            "GetDocumentationVersions": dict(restApiId=a),
            "GetDocumentationVersion": dict(restApiId=a, documentationVersion="v1"),
            "UpdateDocumentationVersion": dict(restApiId=a, documentationVersion="v1", patchOperations=patch),
            "GetTags": dict(resourceArn=arn), "TagResource": dict(resourceArn=arn, tags={"t": "1"}),
            "UntagResource": dict(resourceArn=arn, tagKeys=["t"]),
            "GetApiKeys": {}, "GetApiKey": dict(apiKey=key["id"]),
            "UpdateApiKey": dict(apiKey=key["id"], patchOperations=patch),
            "ImportApiKeys": dict(body=b"name,key,enabled\nk2,abcdefghijklmnopqrstuvwxyz0123,true\n",
                                  format="csv"),
            "GetUsagePlans": {}, "GetUsagePlan": dict(usagePlanId=plan["id"]),
            "UpdateUsagePlan": dict(usagePlanId=plan["id"], patchOperations=patch),
            "CreateUsagePlanKey": dict(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY"),
            "GetUsagePlanKeys": dict(usagePlanId=plan["id"]),
            "GetUsagePlanKey": dict(usagePlanId=plan["id"], keyId=key["id"]),
            "GetUsage": dict(usagePlanId=plan["id"], startDate="2024-01-01", endDate="2024-01-02"),
            "UpdateUsage": dict(usagePlanId=plan["id"], keyId=key["id"], patchOperations=[
                {"op": "replace", "path": "/remaining", "value": "5"}]),
            "DeleteUsagePlanKey": dict(usagePlanId=plan["id"], keyId=key["id"]),
            "GetClientCertificates": {}, "GetClientCertificate": dict(clientCertificateId=cert["clientCertificateId"]),
            "UpdateClientCertificate": dict(clientCertificateId=cert["clientCertificateId"], patchOperations=patch),
            "GetVpcLinks": {}, "GetVpcLink": dict(vpcLinkId=link["id"]),
            "UpdateVpcLink": dict(vpcLinkId=link["id"], patchOperations=patch),
            "GetDomainNames": {}, "GetDomainName": dict(domainName=domain),
            "UpdateDomainName": dict(domainName=domain, patchOperations=[
                {"op": "replace", "path": "/securityPolicy", "value": "TLS_1_2"}]),
            "GetBasePathMappings": dict(domainName=domain),
            "GetBasePathMapping": dict(domainName=domain, basePath="v1"),
            "UpdateBasePathMapping": dict(domainName=domain, basePath="v1", patchOperations=[
                {"op": "replace", "path": "/basePath", "value": "v2"}]),
            "GetDomainNameAccessAssociations": {},
            "RejectDomainNameAccessAssociation": dict(
                domainNameAccessAssociationArn=dnaa["domainNameAccessAssociationArn"],
                domainNameArn=dnaa["domainNameArn"]),
            "GetSdkTypes": {}, "GetSdkType": dict(id="java"),
            "GetSdk": dict(restApiId=a, stageName="prod", sdkType="java"),
            # the deletions last, each on what it names
            "DeleteBasePathMapping": dict(domainName=domain, basePath="v2"),
            "DeleteDomainNameAccessAssociation": dict(domainNameAccessAssociationArn="arn:aws:apigateway:"
                                                      "us-east-1:1:/domainnameaccessassociations/x"),
            "DeleteDomainName": dict(domainName=domain),
            "DeleteVpcLink": dict(vpcLinkId=link["id"]),
            "DeleteClientCertificate": dict(clientCertificateId=cert["clientCertificateId"]),
            "DeleteUsagePlan": dict(usagePlanId=plan["id"]),
            "DeleteApiKey": dict(apiKey=key["id"]),
            "DeleteDocumentationVersion": dict(restApiId=a, documentationVersion="v1"),
            "DeleteDocumentationPart": dict(restApiId=a, documentationPartId=part["id"]),
            "DeleteGatewayResponse": dict(restApiId=a, responseType="THROTTLED"),
            "DeleteRequestValidator": dict(restApiId=a, requestValidatorId=validator["id"]),
            "DeleteModel": dict(restApiId=a, modelName="M"),
            "DeleteStage": dict(restApiId=a, stageName="beta"),
            "DeleteIntegrationResponse": dict(m, statusCode="200"),
            "DeleteMethodResponse": dict(m, statusCode="200"),
            "DeleteIntegration": m, "DeleteMethod": m,
            "DeleteAuthorizer": dict(restApiId=a, authorizerId=auth["id"]),
            "DeleteResource": dict(restApiId=a, resourceId=r),
            "DeleteDeployment": dict(restApiId=a, deploymentId=dep),
        }
        creates = {"CreateRestApi", "CreateResource", "PutMethod", "PutIntegration",
                   "PutIntegrationResponse", "PutMethodResponse", "CreateDeployment",
                   "CreateAuthorizer", "CreateApiKey", "CreateUsagePlan", "GenerateClientCertificate",
                   "CreateVpcLink", "CreateDocumentationPart", "CreateDocumentationVersion",
                   "CreateRequestValidator", "CreateModel", "CreateDomainName",
                   "CreateBasePathMapping", "CreateDomainNameAccessAssociation", "DeleteRestApi"}
        operations = set(c.meta.service_model.operation_names)
        assert len(operations) == 124
        assert set(calls) | creates == operations, sorted(operations - set(calls) - creates)
        answers = {}
        for name, kw in calls.items():
            method = getattr(c, c.meta.method_to_api_mapping and
                             {v: k for k, v in c.meta.method_to_api_mapping.items()}[name])
            answers[name] = ok_or_aws_error(method, **kw)
        answers["DeleteRestApi"] = ok_or_aws_error(c.delete_rest_api, restApiId=a)
        unknown = {n: a for n, a in answers.items()
                   if a.get("Error", {}).get("Code") == "UnknownOperationException"}
        assert not unknown
        # the calls AWS itself refuses here, and nothing else: no SDKs, an association that
        # does not exist, a plan still bound to a stage, a deployment a stage still serves
        failed = {n: a["Error"]["Code"] for n, a in answers.items() if "Error" in a}
        messages = {n: a["Error"]["Message"] for n, a in answers.items() if "Error" in a}
        assert failed == {"GetSdkType": "NotFoundException", "GetSdk": "NotFoundException",
                          "DeleteDomainNameAccessAssociation": "NotFoundException",
                          "DeleteUsagePlan": "BadRequestException",
                          "DeleteDeployment": "BadRequestException"}, messages
    finally:
        g.stop()


def test_test_invoke_method_runs_the_pipeline_without_a_deployment(env, upstream):
    """TestInvokeMethod on a method never deployed: a MOCK with a Velocity response template
    reading the path parameter, and an HTTP_PROXY to a real upstream, with AWS's answer shape
    and execution log."""
    g = Gateway(env, CONFIG % upstream.url)
    try:
        c = client(g)
        api = c.create_rest_api(name="invoke")
        a, root = api["id"], api["rootResourceId"]
        pets = c.create_resource(restApiId=a, parentId=root, pathPart="pets")
        pet = c.create_resource(restApiId=a, parentId=pets["id"], pathPart="{petId}")
        c.put_method(restApiId=a, resourceId=pet["id"], httpMethod="GET", authorizationType="NONE",
                     requestParameters={"method.request.path.petId": True})
        c.put_integration(restApiId=a, resourceId=pet["id"], httpMethod="GET", type="MOCK",
                          requestTemplates={"application/json": '{"statusCode": 200}'})
        c.put_integration_response(restApiId=a, resourceId=pet["id"], httpMethod="GET",
                                   statusCode="200", responseTemplates={
                                       "application/json": '{"petId": "$input.params(\'petId\')"}'})
        c.put_method_response(restApiId=a, resourceId=pet["id"], httpMethod="GET", statusCode="200")
        out = c.test_invoke_method(restApiId=a, resourceId=pet["id"], httpMethod="GET",
                                   pathWithQueryString="/pets/123?foo=bar")
        assert out["status"] == 200
        assert json.loads(out["body"]) == {"petId": "123"}
        assert out["headers"]["Content-Type"] == "application/json"
        assert out["multiValueHeaders"]["Content-Type"] == ["application/json"]
        assert isinstance(out["latency"], int)
        log = out["log"].splitlines()
        assert log[0].startswith("Execution log for request ")
        assert log[2].endswith("HTTP Method: GET, Resource Path: /pets/123")
        assert log[3].endswith("Method request path: {petId=123}")
        assert log[4].endswith("Method request query string: {foo=bar}")
        assert log[-1].endswith("Method completed with status: 200")
        assert "Successfully completed execution" in out["log"]

        # an HTTP proxy to a real upstream; the call's headers and body reach it
        c.put_method(restApiId=a, resourceId=pets["id"], httpMethod="POST", authorizationType="NONE")
        c.put_integration(restApiId=a, resourceId=pets["id"], httpMethod="POST", type="HTTP_PROXY",
                          integrationHttpMethod="POST", uri=upstream.url + "/echo/pets")
        out = c.test_invoke_method(restApiId=a, resourceId=pets["id"], httpMethod="POST",
                                   pathWithQueryString="/pets", body='{"name": "rex"}',
                                   headers={"X-Test": "1"})
        assert out["status"] == 200
        seen = json.loads(out["body"])
        assert seen["method"] == "POST" and seen["path"] == "/echo/pets" and seen["body_size"] == 15
        assert ["X-Test", "1"] in seen["headers"]
        assert out["headers"]["X-Upstream"] == "up1"
        assert c.get_stages(restApiId=a)["item"] == []          # nothing was deployed

        # a stage variable the URI needs and the call does not give: AWS's 500 and log line
        c.put_method(restApiId=a, resourceId=root, httpMethod="ANY", authorizationType="NONE")
        c.put_integration(restApiId=a, resourceId=root, httpMethod="ANY", type="HTTP_PROXY",
                          integrationHttpMethod="ANY", uri="https://${stageVariables.testHost}")
        out = c.test_invoke_method(restApiId=a, resourceId=root, httpMethod="ANY")
        assert out["status"] == 500
        assert json.loads(out["body"]) == {"message": "Internal server error"}
        assert "Execution failed due to configuration error" in out["log"]
        assert out["log"].splitlines()[-1].endswith("Method completed with status: 500")

        with pytest.raises(ClientError) as e:
            c.test_invoke_method(restApiId=a, resourceId=pet["id"], httpMethod="HEAD")
        assert e.value.response["Error"]["Message"] == "Invalid Method identifier specified"
    finally:
        g.stop()


def test_vpc_link_routes_an_integration_to_an_upstream_group(env, upstream):
    g = Gateway(env, CONFIG % upstream.url)
    try:
        c = client(g)
        link = c.create_vpc_link(name="pets", targetArns=[
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/pets/50dc6c495c0c9188"])
        assert link["status"] == "PENDING"          # as AWS answers CreateVpcLink
        assert c.get_vpc_link(vpcLinkId=link["id"])["status"] == "AVAILABLE"
        broken = c.create_vpc_link(name="none", targetArns=[
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/nosuch/1"])
        got = c.get_vpc_link(vpcLinkId=broken["id"])
        assert got["status"] == "FAILED" and "nosuch" in got["statusMessage"]
        with pytest.raises(ClientError) as e:
            c.create_vpc_link(name="x", targetArns=["invalid-arn"])
        assert e.value.response["Error"]["Message"] == "Invalid ARN. ARN is not well formed invalid-arn"

        api = c.create_rest_api(name="vpc")
        a, root = api["id"], api["rootResourceId"]
        c.put_method(restApiId=a, resourceId=root, httpMethod="GET", authorizationType="NONE")
        c.put_integration(restApiId=a, resourceId=root, httpMethod="GET", type="HTTP_PROXY",
                          integrationHttpMethod="GET", uri="http://pets-nlb.internal/echo/vpc",
                          connectionType="VPC_LINK", connectionId="${stageVariables.link}")
        c.create_deployment(restApiId=a, stageName="prod", variables={"link": link["id"]})
        r = wait_until(lambda: (lambda r: r if r.status_code == 200 else None)(
            httpx.get(f"{g.url}/prod/", headers={"Connection": "close"})), timeout=15)
        assert r.headers["x-upstream"] == "up1" and r.json()["path"] == "/echo/vpc"
    finally:
        g.stop()


class MutualTlsBackend:
    """An HTTPS server on loopback that requires a client certificate signed by `ca_pem`
    and answers with the common name it was shown."""

    def __init__(self, tmp_path, ca_pem: str):
        from test_tls_upstream import make_cert
        cert, key = make_cert(tmp_path)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=ca_pem)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                peer = self.connection.getpeercert()
                cn = dict(x[0] for x in peer["subject"])["commonName"]
                body = json.dumps({"clientCN": cn}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_stage_client_certificate_is_presented_to_the_backend(env, upstream, tmp_path):
    g = Gateway(env, CONFIG % upstream.url)
    backend = None
    try:
        c = client(g)
        cert = c.generate_client_certificate(description="to the backend")
        pem = cert["pemEncodedCertificate"]
        from cryptography import x509
        parsed = x509.load_pem_x509_certificate(pem.encode())      # a real certificate
        assert parsed.not_valid_after_utc.timestamp() == pytest.approx(
            cert["expirationDate"].timestamp(), abs=1)
        assert "privateKey" not in json.dumps(c.get_client_certificate(
            clientCertificateId=cert["clientCertificateId"]), default=str)
        backend = MutualTlsBackend(tmp_path, pem)

        api = c.create_rest_api(name="mtls")
        a, root = api["id"], api["rootResourceId"]
        c.put_method(restApiId=a, resourceId=root, httpMethod="GET", authorizationType="NONE")
        c.put_integration(restApiId=a, resourceId=root, httpMethod="GET", type="HTTP_PROXY",
                          integrationHttpMethod="GET", uri=backend.url + "/",
                          tlsConfig={"insecureSkipVerification": True})
        c.create_deployment(restApiId=a, stageName="prod")
        # until the deployment is served (before it, no API answers /prod: 404)
        r = wait_until(lambda: (lambda r: r if r.status_code not in (403, 404) else None)(
            httpx.get(f"{g.url}/prod/", headers={"Connection": "close"})), timeout=15)
        assert r.status_code >= 500         # no certificate: the backend ends the handshake
        c.update_stage(restApiId=a, stageName="prod", patchOperations=[
            {"op": "replace", "path": "/clientCertificateId", "value": cert["clientCertificateId"]}])
        r = wait_until(lambda: (lambda r: r if r.status_code == 200 else None)(
            httpx.get(f"{g.url}/prod/", headers={"Connection": "close"})), timeout=15)
        assert r.json() == {"clientCN": f"ApiGateway {cert['clientCertificateId']}"}
    finally:
        if backend is not None:
            backend.stop()
        g.stop()


def test_aws_cli_tutorial_flow(env, upstream, tmp_path):
    """The AWS CLI as a user following AWS's REST API tutorials drives it: create an API, a
    model and a request validator, a method that uses both, update its integration, test-invoke
    it (the validator refuses a bad body), tag it, deploy, export and re-import."""
    import os
    import subprocess
    from conftest import ROOT
    from test_control_api import KEY, SECRET
    g = Gateway(env, CONFIG % upstream.url)
    cli_env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_PAGER": ""}

    def aws(*args) -> dict:
        done = subprocess.run([str(ROOT / ".venv" / "bin" / "aws"), "apigateway", *args,
                               "--endpoint-url", f"http://127.0.0.1:{g.admin_port}", "--output", "json"],
                              env=cli_env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else {}
    try:
        api = aws("create-rest-api", "--name", "cli-tutorial")
        a = api["id"]
        assert api["endpointConfiguration"]["types"] == ["EDGE"]
        root = aws("get-resources", "--rest-api-id", a)["items"][0]["id"]
        pets = aws("create-resource", "--rest-api-id", a, "--parent-id", root, "--path-part", "pets")
        aws("create-model", "--rest-api-id", a, "--name", "Pet", "--content-type", "application/json",
            "--schema", json.dumps({"$schema": "http://json-schema.org/draft-04/schema#",
                                    "type": "object", "required": ["name"],
                                    "properties": {"name": {"type": "string"}}}))
        validator = aws("create-request-validator", "--rest-api-id", a, "--name", "body-only",
                        "--validate-request-body")
        aws("put-method", "--rest-api-id", a, "--resource-id", pets["id"], "--http-method", "POST",
            "--authorization-type", "NONE", "--request-validator-id", validator["id"],
            "--request-models", "application/json=Pet")
        aws("put-integration", "--rest-api-id", a, "--resource-id", pets["id"], "--http-method", "POST",
            "--type", "HTTP_PROXY", "--integration-http-method", "POST", "--uri", upstream.url + "/echo/v1")
        updated = aws("update-integration", "--rest-api-id", a, "--resource-id", pets["id"],
                      "--http-method", "POST", "--patch-operations",
                      f"op=replace,path=/uri,value={upstream.url}/echo/v2")
        assert updated["uri"] == upstream.url + "/echo/v2"
        good = aws("test-invoke-method", "--rest-api-id", a, "--resource-id", pets["id"],
                   "--http-method", "POST", "--path-with-query-string", "/pets",
                   "--body", '{"name": "rex"}', "--headers", "Content-Type=application/json")
        assert good["status"] == 200 and json.loads(good["body"])["path"] == "/echo/v2"
        bad = aws("test-invoke-method", "--rest-api-id", a, "--resource-id", pets["id"],
                  "--http-method", "POST", "--path-with-query-string", "/pets",
                  "--body", '{"age": 3}', "--headers", "Content-Type=application/json")
        assert bad["status"] == 400 and json.loads(bad["body"])["message"] == "Invalid request body"
        arn = f"arn:aws:apigateway:us-east-1::/restapis/{a}"
        aws("tag-resource", "--resource-arn", arn, "--tags", "team=pets")
        assert aws("get-tags", "--resource-arn", arn)["tags"] == {"team": "pets"}
        assert aws("get-rest-api", "--rest-api-id", a)["tags"] == {"team": "pets"}
        aws("create-deployment", "--rest-api-id", a, "--stage-name", "prod")
        out = tmp_path / "export.json"
        aws("get-export", "--rest-api-id", a, "--stage-name", "prod", "--export-type", "oas30",
            "--parameters", "extensions=integrations", str(out))
        exported = json.loads(out.read_text())
        assert set(exported["components"]["schemas"]) == {"Empty", "Error", "Pet"}
        again = aws("import-rest-api", "--body", f"fileb://{out}")
        models = {m["name"] for m in aws("get-models", "--rest-api-id", again["id"])["items"]}
        assert "Pet" in models
        resources = aws("get-resources", "--rest-api-id", again["id"], "--embed", "methods")["items"]
        post = next(r for r in resources if r["path"] == "/pets")["resourceMethods"]["POST"]
        assert post["methodIntegration"]["uri"] == upstream.url + "/echo/v2"
        assert post["requestModels"] == {"application/json": "Pet"}
    finally:
        g.stop()
