import type { TestApp } from './app.ts';

export type TestResponse<T = Record<string, unknown>> = {
  status: number;
  body: T;
  headers: Record<string, string | number | string[] | undefined>;
  text: string;
};

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/**
 * A browser-like HTTP client for tests: keeps cookies, sends the same-origin headers a
 * browser sends, and the CSRF token once it knows one. Requests go through Fastify's inject.
 */
export class TestClient {
  cookies = new Map<string, string>();
  csrfToken: string | null = null;
  headers: Record<string, string> = {};

  constructor(
    readonly app: TestApp,
    readonly opts: { origin?: string | null; ip?: string } = {},
  ) {}

  cookieHeader(): string | undefined {
    if (this.cookies.size === 0) return undefined;
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  async request<T = Record<string, unknown>>(
    method: Method,
    url: string,
    body?: unknown,
    extraHeaders: Record<string, string> = {},
  ): Promise<TestResponse<T>> {
    const headers: Record<string, string> = { ...this.headers };
    const cookie = this.cookieHeader();
    if (cookie) headers.cookie = cookie;
    const origin = this.opts.origin === undefined ? 'http://berth.test' : this.opts.origin;
    if (method !== 'GET' && origin) {
      headers.origin = origin;
      headers['sec-fetch-site'] = 'same-origin';
    }
    if (method !== 'GET' && this.csrfToken) headers['x-csrf-token'] = this.csrfToken;
    Object.assign(headers, extraHeaders);
    const res = await this.app.http.inject({
      method,
      url,
      headers,
      remoteAddress: this.opts.ip ?? '127.0.0.1',
      ...(body === undefined ? {} : { payload: body as string | object }),
    });
    const setCookie = res.headers['set-cookie'];
    for (const c of Array.isArray(setCookie) ? setCookie : setCookie ? [setCookie] : []) {
      const [pair, ...attrs] = c.split(';');
      const eq = (pair ?? '').indexOf('=');
      const name = (pair ?? '').slice(0, eq).trim();
      const value = (pair ?? '').slice(eq + 1).trim();
      const expired = attrs.some((a) => /max-age=0/i.test(a) || /expires=thu, 01 jan 1970/i.test(a));
      if (expired || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    let parsed: unknown = res.body;
    try {
      parsed = res.body ? JSON.parse(res.body) : {};
    } catch {
      // not JSON: keep the text
    }
    return { status: res.statusCode, body: parsed as T, headers: res.headers, text: res.body };
  }

  get<T = Record<string, unknown>>(url: string, headers?: Record<string, string>) {
    return this.request<T>('GET', url, undefined, headers);
  }
  post<T = Record<string, unknown>>(url: string, body?: unknown, headers?: Record<string, string>) {
    return this.request<T>('POST', url, body ?? {}, headers);
  }
  patch<T = Record<string, unknown>>(url: string, body?: unknown, headers?: Record<string, string>) {
    return this.request<T>('PATCH', url, body ?? {}, headers);
  }
  put<T = Record<string, unknown>>(url: string, body?: unknown, headers?: Record<string, string>) {
    return this.request<T>('PUT', url, body ?? {}, headers);
  }
  delete<T = Record<string, unknown>>(url: string, body?: unknown, headers?: Record<string, string>) {
    return this.request<T>('DELETE', url, body, headers);
  }
}
