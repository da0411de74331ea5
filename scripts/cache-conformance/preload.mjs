// Harness glue for running the cache-tests CLI under Node 20 (loaded with --import).
// 1. The newest client code uses the global fetch() and, for the interim tests,
//    `import('undici')` + getGlobalDispatcher().compose(...) with undici-7 style
//    handlers.  Node 20's built-in fetch is undici 6, so use undici 7's fetch as
//    the global fetch to keep fetch and dispatcher from the same undici.
// 2. Forward-proxy mode: CT_PROXY=http://127.0.0.1:PORT makes every request go
//    through the proxy in absolute form (proxyTunnel: false, i.e. no CONNECT).
import { fetch, Headers, Request, Response, FormData, setGlobalDispatcher, ProxyAgent, Agent } from 'undici'

globalThis.fetch = fetch
globalThis.Headers = Headers
globalThis.Request = Request
globalThis.Response = Response
globalThis.FormData = FormData

const agentOpts = {}
if (process.env.CT_PROXY) {
  setGlobalDispatcher(new ProxyAgent({ uri: process.env.CT_PROXY, proxyTunnel: false, ...agentOpts }))
} else {
  setGlobalDispatcher(new Agent(agentOpts))
}
