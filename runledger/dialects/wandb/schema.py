"""The GraphQL schema W&B's public API client reads (`wandb.Api`), built with graphql-core.

Only what the client's read path and its public-API writes name is declared; every field a
client document names must exist (W&B's client fails a whole call on any GraphQL error), and a
field we have no data for resolves to null. tests/test_wandb_contract.py validates the documents
extracted from each pinned wandb wheel against this schema. Scalars carry W&B's names
(`JSONString`, `Int64`, `JSON`, `DateTime`).
"""

from __future__ import annotations

from typing import Any

import orjson
from graphql import GraphQLScalarType, build_schema, GraphQLSchema
from graphql.language import ast

SDL = '''
scalar JSONString
scalar JSON
scalar Int64
scalar DateTime
# History rows (W&B declares [String]): each item is one JSON row. A scalar here, so a page of a
# thousand rows is handed over as one value instead of being completed item by item (measured:
# 2.5 ms of a 17 ms page); clients read the same JSON list either way.
scalar HistoryLines

type Query {
  viewer: User
  project(name: String, entityName: String): Project
  models(entityName: String, after: String, first: Int, order: String): ProjectConnection
  serverInfo: ServerInfo
}

type Mutation {
  upsertBucket(input: UpsertBucketInput!): UpsertBucketPayload
  deleteRun(input: DeleteRunInput!): DeleteRunPayload
}

type ServerInfo {
  features: [ServerFeature!]!
  latestLocalVersionInfo: JSON
  cliVersionInfo: JSON
}

type ServerFeature { name: String! isEnabled: Boolean! }

type User {
  id: ID!
  name: String
  username: String
  email: String
  admin: Boolean
  flags: JSONString
  entity: String
  deletedAt: DateTime
  apiKeys: ApiKeyConnection
  teams: EntityConnection
}

type ApiKeyConnection { edges: [ApiKeyEdge!]! }
type ApiKeyEdge { node: ApiKey }
type ApiKey { id: ID! name: String! description: String }
type EntityConnection { edges: [EntityEdge!]! }
type EntityEdge { node: Entity }
type Entity { id: ID! name: String! }

type PageInfo {
  startCursor: String
  endCursor: String
  hasNextPage: Boolean!
  hasPreviousPage: Boolean!
}

type ProjectConnection { edges: [ProjectEdge!]! pageInfo: PageInfo! }
type ProjectEdge { node: Project cursor: String! }

type Project {
  id: ID!
  internalId: ID!
  name: String!
  entityName: String!
  entity: Entity
  description: String
  createdAt: DateTime!
  isBenchmark: Boolean!
  readOnly: Boolean
  user: User
  runCount(filters: JSONString): Int!
  runs(filters: JSONString, after: String, first: Int, order: String): RunConnection
  run(name: String!): Run
}

type RunConnection { edges: [RunEdge!]! pageInfo: PageInfo! totalCount: Int }
type RunEdge { node: Run cursor: String! }

type Run {
  id: ID!
  name: String!
  displayName: String
  projectId: ID!
  project: Project
  tags: [String!]
  sweepName: String
  state: String
  config: JSONString
  group: String
  jobType: String
  commit: String
  readOnly: Boolean
  createdAt: DateTime
  heartbeatAt: DateTime
  updatedAt: DateTime
  description: String
  notes: String
  systemMetrics: JSONString
  summaryMetrics: JSONString
  historyLineCount: Int
  user: User
  historyKeys(format: String): JSON
  sampledHistory(specs: [JSONString!]!): [JSON]
  history(samples: Int, minStep: Int64, maxStep: Int64): HistoryLines
  events(samples: Int): HistoryLines
  parquetHistory(liveKeys: [String!]!): RunParquetHistory!
}

type RunParquetHistory { parquetUrls: [String!]! liveData: [JSON!]! }

input UpsertBucketInput {
  id: String
  name: String
  groupName: String
  modelName: String
  entityName: String
  description: String
  displayName: String
  notes: String
  commit: String
  config: JSONString
  host: String
  debug: Boolean
  program: String
  repo: String
  jobType: String
  state: String
  sweep: String
  tags: [String!]
  summaryMetrics: JSONString
}

type UpsertBucketPayload { bucket: Run inserted: Boolean }

input DeleteRunInput { id: ID! deleteArtifacts: Boolean clientMutationId: String }

type DeleteRunPayload { clientMutationId: String }
'''


def _json_string_out(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _json_string_literal(node: ast.ValueNode, _variables: Any = None) -> Any:
    if isinstance(node, ast.StringValueNode):
        return node.value
    raise TypeError("JSONString literals must be strings")


def _json_literal(node: ast.ValueNode, variables: Any = None) -> Any:
    from graphql import value_from_ast_untyped

    return value_from_ast_untyped(node, variables)


def _int64_in(value: Any) -> int:
    # Int64 travels as a JSON number or a decimal string (genqlient sends numbers).
    if isinstance(value, bool):
        raise TypeError("Int64 cannot be a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise TypeError(f"Int64 cannot represent {value!r}")


def _int64_literal(node: ast.ValueNode, _variables: Any = None) -> int:
    if isinstance(node, (ast.IntValueNode, ast.StringValueNode)):
        return _int64_in(node.value)
    raise TypeError("Int64 literals must be integers")


def build() -> GraphQLSchema:
    schema = build_schema(SDL)
    scalars = {
        "JSONString": GraphQLScalarType("JSONString", serialize=_json_string_out, parse_value=lambda v: v,
                                        parse_literal=_json_string_literal),
        "JSON": GraphQLScalarType("JSON", serialize=lambda v: v, parse_value=lambda v: v,
                                  parse_literal=_json_literal),
        "Int64": GraphQLScalarType("Int64", serialize=int, parse_value=_int64_in, parse_literal=_int64_literal),
        "DateTime": GraphQLScalarType("DateTime", serialize=str, parse_value=str),
        "HistoryLines": GraphQLScalarType("HistoryLines", serialize=list, parse_value=list),
    }
    for name, scalar in scalars.items():
        target = schema.type_map[name]
        assert isinstance(target, GraphQLScalarType)
        target.serialize = scalar.serialize  # type: ignore[method-assign]
        target.parse_value = scalar.parse_value  # type: ignore[method-assign]
        target.parse_literal = scalar.parse_literal  # type: ignore[method-assign]
    return schema
