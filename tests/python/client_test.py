#!/usr/bin/env python3
"""Proof that a client in another language works: Python stubs generated from proto/ at run time.

Against a running Tributary server, this script creates an entity type, a connector and a
consumer (admin token), runs a replace session (connector token), reads the records back through
the Catalog (consumer token), and checks that an invalid record is refused with INVALID_ARGUMENT
and google.rpc.BadRequest field violations in the `grpc-status-details-bin` trailer.

It also checks the checksum contract (SPEC.md §1.1) against the known answers of
tests/vectors/checksums.json: every vector's canonical JSON and BLAKE3 checksum, computed here with
the `rfc8785` and `blake3` packages, and the checksum the server computes for the same record.

    python3 -m pip install -r tests/python/requirements.txt
    python3 tests/python/client_test.py --server 127.0.0.1:50051 --admin-token "$(cat tributary-data/admin.token)"

Against a server with TLS, pass --ca-file (the PEM of the authority that signed the server's
certificate; the system's roots otherwise), and --client-cert/--client-key for mTLS.

Exits 0 when every check passes; prints the failed check and exits 1 otherwise. The Rust test
`python_client` (tests/tests/python.rs) runs it against a sandbox server.
"""

import argparse
import importlib
import json
import os
import sys
import tempfile
import uuid

import blake3
import grpc
import grpc_tools
import rfc8785
from grpc_tools import protoc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VECTORS = os.path.join(REPO, "tests", "vectors", "checksums.json")
PROTOS = [
    "tributary/admin/v1/admin.proto",
    "tributary/catalog/v1/catalog.proto",
    "tributary/contribution/v1/contribution.proto",
]


def generate_stubs(out_dir):
    """Runs grpcio-tools' protoc over proto/ into out_dir and puts it on sys.path."""
    proto_root = os.path.join(REPO, "proto")
    # The well-known types (google/protobuf/struct.proto, ...) ship inside grpcio-tools.
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
    ] + PROTOS
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed to generate the Python stubs")
    sys.path.insert(0, out_dir)


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}")


def metadata(token):
    return (("authorization", f"Bearer {token}"),)


def struct(value):
    s = struct_pb2.Struct()
    s.update(value)
    return s


def bad_request(error):
    """The BadRequest field violations of a failed call, as (field, description) pairs."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            violations = []
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    br = error_details_pb2.BadRequest()
                    detail.Unpack(br)
                    violations += [(v.field, v.description) for v in br.field_violations]
            return violations
    return []


def checksum_vectors():
    """The vectors of tests/vectors/checksums.json, each checked with rfc8785 and blake3."""
    with open(VECTORS, encoding="utf-8") as f:
        vectors = json.load(f)["vectors"]
    for v in vectors:
        record = v["record"]
        whole = {
            "name": record["name"],
            "entity": record["entity"],
            # An absent instance is {} (SPEC.md §1.1).
            "instance": record.get("instance", {}),
        }
        canonical = rfc8785.dumps(whole)
        check(canonical.decode("utf-8") == v["canonical"], f"canonical JSON of vector {v['case']!r}")
        check(
            blake3.blake3(canonical).hexdigest() == v["checksum"],
            f"BLAKE3 checksum of vector {v['case']!r}",
        )
    return vectors


def server_checksums_match_the_vectors(stubs, as_admin):
    """Upserts every vector as a record and checks the checksum the server computed."""
    admin_pb2, admin, contribution_pb2, contribution, catalog_pb2, catalog = stubs
    vectors = checksum_vectors()
    slug = "pyvector-" + uuid.uuid4().hex[:8]
    admin.CreateEntityType(
        admin_pb2.CreateEntityTypeRequest(
            entity_type=admin_pb2.EntityType(slug=slug, name="Vectors", schema=struct({"type": "object"}))
        ),
        metadata=as_admin,
    )
    connector = admin.CreateConnector(
        admin_pb2.CreateConnectorRequest(connector=admin_pb2.Connector(name="vectors", entity_type=slug)),
        metadata=as_admin,
    )
    consumer = admin.CreateConsumer(
        admin_pb2.CreateConsumerRequest(consumer=admin_pb2.Consumer(name="vectors", entity_types=[slug])),
        metadata=as_admin,
    )
    as_connector = metadata(connector.token)
    session = contribution.OpenSession(
        contribution_pb2.OpenSessionRequest(mode=contribution_pb2.SESSION_MODE_STREAM),
        metadata=as_connector,
    ).session_id
    records = []
    for i, v in enumerate(vectors):
        r = v["record"]
        record = contribution_pb2.Record(id=f"v{i}", name=r["name"], entity=struct(r["entity"]))
        if "instance" in r:
            record.instance.CopyFrom(struct(r["instance"]))
        records.append(record)
    contribution.Upsert(
        contribution_pb2.UpsertRequest(session_id=session, records=records), metadata=as_connector
    )
    found = catalog.LookupByExternalIds(
        catalog_pb2.LookupByExternalIdsRequest(
            entity_type=slug, ids=[f"v{i}" for i in range(len(vectors))]
        ),
        metadata=metadata(consumer.token),
    )
    by_id = {r.id: r.checksum for r in found.records}
    for i, v in enumerate(vectors):
        check(by_id.get(f"v{i}") == v["checksum"], f"the server's checksum of vector {v['case']!r}")
    admin.DeleteEntityType(admin_pb2.DeleteEntityTypeRequest(slug=slug, force=True), metadata=as_admin)


def open_channel(server, ca_file=None, client_cert=None, client_key=None, tls=False):
    """A plaintext channel, or a TLS one when any TLS option is given."""
    if not (tls or ca_file or client_cert):
        return grpc.insecure_channel(server)

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(ca_file) if ca_file else None,
        private_key=read(client_key) if client_key else None,
        certificate_chain=read(client_cert) if client_cert else None,
    )
    return grpc.secure_channel(server, credentials)


def run(server, admin_token, **tls):
    admin_pb2 = importlib.import_module("tributary.admin.v1.admin_pb2")
    admin_grpc = importlib.import_module("tributary.admin.v1.admin_pb2_grpc")
    catalog_pb2 = importlib.import_module("tributary.catalog.v1.catalog_pb2")
    catalog_grpc = importlib.import_module("tributary.catalog.v1.catalog_pb2_grpc")
    contribution_pb2 = importlib.import_module("tributary.contribution.v1.contribution_pb2")
    contribution_grpc = importlib.import_module("tributary.contribution.v1.contribution_pb2_grpc")

    channel = open_channel(server, **tls)
    grpc.channel_ready_future(channel).result(timeout=30)
    admin = admin_grpc.AdminStub(channel)
    contribution = contribution_grpc.ContributionStub(channel)
    catalog = catalog_grpc.CatalogStub(channel)
    as_admin = metadata(admin_token)

    # A fresh slug, so the script can run against a server that already has data.
    slug = "pycountry-" + uuid.uuid4().hex[:8]
    schema = {
        "type": "object",
        "required": ["code", "population"],
        "properties": {
            "code": {"type": "string"},
            "population": {"type": "integer", "minimum": 0},
        },
    }
    created = admin.CreateEntityType(
        admin_pb2.CreateEntityTypeRequest(
            entity_type=admin_pb2.EntityType(slug=slug, name="Country", schema=struct(schema))
        ),
        metadata=as_admin,
    )
    check(created.entity_type.slug == slug, f"entity type {slug} created")
    check(created.entity_type.schema_version == 1, "a new entity type has schema version 1")

    connector = admin.CreateConnector(
        admin_pb2.CreateConnectorRequest(
            connector=admin_pb2.Connector(name="python", entity_type=slug)
        ),
        metadata=as_admin,
    )
    check(connector.token.startswith("tbc_"), "connector token returned once")
    consumer = admin.CreateConsumer(
        admin_pb2.CreateConsumerRequest(
            consumer=admin_pb2.Consumer(name="python reader", entity_types=[slug])
        ),
        metadata=as_admin,
    )
    check(consumer.token.startswith("tbr_"), "consumer token returned once")
    as_connector = metadata(connector.token)
    as_consumer = metadata(consumer.token)

    # A replace session: two records, committed together.
    session = contribution.OpenSession(
        contribution_pb2.OpenSessionRequest(mode=contribution_pb2.SESSION_MODE_REPLACE),
        metadata=as_connector,
    ).session_id
    records = [
        contribution_pb2.Record(
            id="GB", name="United Kingdom", entity=struct({"code": "GB", "population": 66040229})
        ),
        contribution_pb2.Record(
            id="IN",
            name="India",
            entity=struct({"code": "IN", "population": 1344860000}),
            instance=struct({"independence": 1947}),
        ),
    ]
    upserted = contribution.Upsert(
        contribution_pb2.UpsertRequest(session_id=session, records=records), metadata=as_connector
    )
    check(
        [o.outcome for o in upserted.outcomes] == [contribution_pb2.OUTCOME_CREATED] * 2,
        "replace upsert reports both records as created",
    )
    before_commit = catalog.ListRecords(
        catalog_pb2.ListRecordsRequest(entity_type=slug), metadata=as_consumer
    )
    check(len(before_commit.records) == 0, "replace session data is invisible before commit")
    closed = contribution.CloseSession(
        contribution_pb2.CloseSessionRequest(session_id=session, commit=True), metadata=as_connector
    )
    check(closed.totals.created == 2, "commit totals count 2 created")
    check(closed.import_result_id != "", "commit wrote an import result")

    # Read back through the Catalog.
    listed = catalog.ListRecords(
        catalog_pb2.ListRecordsRequest(entity_type=slug), metadata=as_consumer
    )
    by_id = {r.id: r for r in listed.records}
    check(sorted(by_id) == ["GB", "IN"], "the catalog lists both records")
    check(by_id["IN"].entity["population"] == 1344860000, "entity numbers read back")
    check(by_id["IN"].instance["independence"] == 1947, "instance read back")
    check(len(by_id["GB"].key) == 40, "records carry their 40-hex key")
    got = catalog.GetRecord(catalog_pb2.GetRecordRequest(key=by_id["GB"].key), metadata=as_consumer)
    check(got.record.name == "United Kingdom", "GetRecord by key")

    # A validation error: INVALID_ARGUMENT with a BadRequest field violation naming the path.
    stream = contribution.OpenSession(
        contribution_pb2.OpenSessionRequest(mode=contribution_pb2.SESSION_MODE_STREAM),
        metadata=as_connector,
    ).session_id
    bad = contribution_pb2.Record(
        id="FR", name="France", entity=struct({"code": "FR", "population": "many"})
    )
    try:
        contribution.Upsert(
            contribution_pb2.UpsertRequest(session_id=stream, records=[records[0], bad]),
            metadata=as_connector,
        )
        raise AssertionError("an invalid record was accepted")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.INVALID_ARGUMENT, "invalid record: INVALID_ARGUMENT")
        violations = bad_request(error)
        print(f"   violations: {violations}")
        check(len(violations) >= 1, "BadRequest details carry field violations")
        check(
            any(field.startswith("records[1].entity.population") for field, _ in violations),
            "the violation names the record index and JSON path",
        )

    # Other errors map to their status codes.
    try:
        catalog.ListRecords(
            catalog_pb2.ListRecordsRequest(entity_type=slug), metadata=metadata("tbr_wrong")
        )
        raise AssertionError("a wrong token was accepted")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.UNAUTHENTICATED, "wrong token: UNAUTHENTICATED")

    admin.DeleteEntityType(admin_pb2.DeleteEntityTypeRequest(slug=slug, force=True), metadata=as_admin)

    stubs = (admin_pb2, admin, contribution_pb2, contribution, catalog_pb2, catalog)
    server_checksums_match_the_vectors(stubs, as_admin)
    channel.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051", help="host:port of the gRPC server")
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("TRIBUTARY_ADMIN_TOKEN"),
        help="the admin token (default: $TRIBUTARY_ADMIN_TOKEN)",
    )
    parser.add_argument("--tls", action="store_true", help="use TLS with the system's roots")
    parser.add_argument("--ca-file", help="PEM roots to trust for a server with TLS")
    parser.add_argument("--client-cert", help="PEM client certificate (mTLS)")
    parser.add_argument("--client-key", help="PEM key of --client-cert")
    args = parser.parse_args()
    if not args.admin_token:
        parser.error("an admin token is needed: --admin-token or TRIBUTARY_ADMIN_TOKEN")
    with tempfile.TemporaryDirectory(prefix="tributary-py-") as out_dir:
        generate_stubs(out_dir)
        try:
            run(
                args.server,
                args.admin_token,
                tls=args.tls,
                ca_file=args.ca_file,
                client_cert=args.client_cert,
                client_key=args.client_key,
            )
        except AssertionError as failed:
            print(f"FAILED: {failed}", file=sys.stderr)
            return 1
        except grpc.RpcError as error:
            print(f"FAILED: unexpected {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print("python client test: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
