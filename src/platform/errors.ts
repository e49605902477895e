/**
 * Berth's one error model. Every error a client can see has a code from this closed list;
 * the code fixes the HTTP status. `/api` renders RFC 9457 problem+json, `/v1` the OpenAI
 * error object. Anything that is not an AppError is an internal error and is rendered
 * without its message or stack.
 *
 * @example throw new AppError('not_found', 'No such workspace.');
 */
export const ERROR_CODES = {
  // 400
  bad_request: 400,
  // a cursor that names nothing of the list; tool-call arguments that are not a JSON object
  invalid_cursor: 400,
  invalid_arguments: 400,
  invalid_json: 400,
  validation_failed: 400,
  weak_password: 400,
  invalid_token: 400,
  token_expired: 400,
  token_used: 400,
  invalid_mfa_code: 400,
  confirmation_mismatch: 400,
  api_key_in_query: 400,
  model_not_priced: 400,
  egress_denied: 400,
  upstream_bad_request: 400,
  invalid_amount: 400,
  unknown_plan: 400,
  invalid_signature: 400,
  unknown_payment: 400,
  unknown_currency: 400,
  unknown_customer: 400,
  invalid_expiry: 400,
  invalid_period: 400,
  invalid_date_range: 400,
  notice_period_too_short: 400,
  unknown_data_category: 400,
  // a non-dry retention run dated after now (it would delete early)
  retention_as_of_future: 400,
  // OAuth connections: the callback's state, the user's consent, the provider's answer
  oauth_state_invalid: 400,
  oauth_state_expired: 400,
  oauth_state_used: 400,
  oauth_denied: 400,
  // agents: a definition in a format this Berth does not read, a tool's parameters that are
  // not valid JSON Schema, two tools of one agent with the same name
  unsupported_agent_format: 400,
  invalid_tool_schema: 400,
  duplicate_tool_name: 400,
  // agent tools: a workspace secret placed where it may not go (URL, body, a header it was
  // not declared for, plain http); a literal credential in a definition or an MCP server's URL
  secret_placement_not_allowed: 400,
  credential_in_definition: 400,
  // agent tools: a connection's token placed where it may not go (URL, body, plain http), or
  // used by a tool while the definition's `connections` does not list it
  connection_placement_not_allowed: 400,
  connection_not_declared: 400,
  // knowledge: a search query that is empty (or only spaces) or longer than 2,000 characters;
  // a knowledge base's text search configuration Postgres does not have; too many files at once
  search_query_empty: 400,
  search_query_too_long: 400,
  unknown_text_search: 400,
  // knowledge: vector or hybrid search of a knowledge base without an embeddings model;
  // rerank asked of one without a rerank model
  search_mode_unavailable: 400,
  rerank_unavailable: 400,
  too_many_files: 400,
  // 401
  unauthenticated: 401,
  invalid_credentials: 401,
  mfa_challenge_required: 401,
  session_expired: 401,
  invalid_api_key: 401,
  api_key_revoked: 401,
  api_key_expired: 401,
  reauthentication_required: 401,
  // 402
  insufficient_credits: 402,
  budget_exceeded: 402,
  // 403
  forbidden: 403,
  csrf_failed: 403,
  mfa_required: 403,
  account_disabled: 403,
  last_owner: 403,
  last_operator: 403,
  insufficient_scope: 403,
  // OAuth connections: a callback from a browser, or a signed-in user, other than the flow's starter
  oauth_browser_mismatch: 403,
  oauth_user_mismatch: 403,
  ip_not_allowed: 403,
  // a stdio MCP server while the operator has not enabled them (BERTH_MCP_STDIO)
  mcp_stdio_disabled: 403,
  model_not_allowed: 403,
  workspace_suspended: 403,
  workspace_restricted: 403,
  processing_restricted: 403,
  // 404
  not_found: 404,
  route_not_found: 404,
  model_not_found: 404,
  export_link_invalid: 404,
  // agent tools: an MCP server or workspace secret named by a definition or a server's headers
  mcp_server_not_found: 404,
  secret_not_found: 404,
  // 409
  conflict: 409,
  email_taken: 409,
  already_member: 409,
  mfa_already_enabled: 409,
  idempotency_conflict: 409,
  reservation_closed: 409,
  seat_limit_reached: 409,
  payments_not_configured: 409,
  payment_method_required: 409,
  objection_exists: 409,
  subprocessor_retired: 409,
  request_pending: 409,
  request_closed: 409,
  request_not_manual: 409,
  already_restricted: 409,
  not_restricted: 409,
  consent_not_given: 409,
  export_pending: 409,
  retention_running: 409,
  mcp_server_disabled: 409,
  // a connection whose refresh failed for good (invalid_grant): reconnect it
  connection_broken: 409,
  // a run of an agent acting through a connection the user has none of (or a broken one)
  connection_required: 409,
  // agents: another live agent of the workspace has the name; publishing a draft identical
  // to the latest version; changing an archived agent
  agent_name_taken: 409,
  agent_unchanged: 409,
  agent_archived: 409,
  // agent runs: an agent with no published version; continuing a run still going; changing
  // a run that ended; deciding on a run not waiting for one; an approval after its window
  agent_not_published: 409,
  previous_run_active: 409,
  run_finished: 409,
  run_not_waiting: 409,
  approval_expired: 409,
  // knowledge: another knowledge base of the workspace has the name; a search of a knowledge
  // base with nothing ready yet while documents are queued or processing; the document limit
  knowledge_base_name_taken: 409,
  knowledge_base_processing: 409,
  knowledge_base_full: 409,
  // 410
  export_link_used: 410,
  export_link_expired: 410,
  export_unavailable: 410,
  deletion_pending: 409,
  sole_owner: 409,
  // 413 / 415
  payload_too_large: 413,
  unsupported_media_type: 415,
  // 429
  rate_limited: 429,
  too_many_attempts: 429,
  upstream_rate_limited: 429,
  // 500 / 502 / 503 / 504
  internal_error: 500,
  upstream_error: 502,
  // knowledge: an embeddings model that answered no usable vectors (or another dimension
  // count than the knowledge base's); a rerank model that answered no relevance scores
  embedding_failed: 502,
  embedding_dimensions_changed: 502,
  rerank_failed: 502,
  oauth_provider_error: 502,
  unavailable: 503,
  // the restricted users could not be read: the gateway and agents refuse (fail closed)
  restrictions_unavailable: 503,
  upstream_timeout: 504,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export type ErrorDetail = { path?: string; message: string };

export class AppError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly extra: { details?: ErrorDetail[]; retryAfterSeconds?: number } = {},
  ) {
    super(message);
    this.name = 'AppError';
    this.status = ERROR_CODES[code];
  }
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError;
}

export const notFound = (what = 'resource') => new AppError('not_found', `No such ${what}.`);
export const forbidden = (message = 'You do not have permission to do this.') => new AppError('forbidden', message);
