// The OpenID provider the integration tests sign in through: `oidc-provider` on
// 127.0.0.1 over HTTPS (the test CA's server certificate), acting both as an
// organization's own identity provider and as a SMART EHR (a FHIR endpoint under
// /fhir with `.well-known/smart-configuration` and `Patient/{id}`, and the launch
// context `patient` and `need_patient_banner` in the token response).
//
// Started by tests/it/sso.rs as `node provider.mjs` with one JSON line on stdin:
//   { "cert": PATH, "key": PATH,
//     "clients": [{ "client_id", "client_secret"?, "redirect_uris": [...] }],
//     "accounts": { SUB: { "fhirUser"?: "Practitioner/…", "email"?: "…" } },
//     "patients": { ID: FHIR Patient resource } }
// and prints one JSON line { "issuer": "https://127.0.0.1:PORT" } when it listens.
//
// What the test changes while it runs (POST JSON to /_test/state on the same port):
//   "login":    { "sub", "amr": [...], "acr" } — who the login page signs in
//   "launches": { LAUNCH: { "sub", "patient", "need_patient_banner" } }
//   "tamper":   "" | "aud" | "exp" | "nonce" | "iss" — re-signs the next id_tokens
//               with that claim wrong, as a broken or hostile provider would
// Nothing here is reachable from outside this machine.

import { createServer } from 'node:https';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import Provider, { errors } from 'oidc-provider';
import { exportJWK, generateKeyPair, decodeJwt, SignJWT } from 'jose';

const input = await new Promise((resolve) => {
  createInterface({ input: process.stdin }).once('line', resolve);
});
const setup = JSON.parse(input);
const state = { login: { sub: 'nobody', amr: ['pwd'], acr: 'urn:test:pwd' }, launches: {}, tamper: '' };
// the launch each account was last signed in with (the token response's context)
const launched = {};

const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: 'test-key-1', alg: 'RS256', use: 'sig' };
const publicJwk = { ...(await exportJWK(publicKey)), kid: 'test-key-1', alg: 'RS256', use: 'sig' };

let handler = (req, res) => { res.statusCode = 503; res.end(); };
const server = createServer(
  { cert: readFileSync(setup.cert), key: readFileSync(setup.key) },
  (req, res) => handler(req, res),
);
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `https://127.0.0.1:${server.address().port}`;
const fhirBase = `${issuer}/fhir`;

const provider = new Provider(issuer, {
  clients: setup.clients.map((c) => ({
    client_id: c.client_id,
    ...(c.client_secret
      ? { client_secret: c.client_secret }
      : { token_endpoint_auth_method: 'none' }),
    redirect_uris: c.redirect_uris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
  })),
  jwks: { keys: [jwk] },
  cookies: { keys: ['directmail test provider cookie key'] },
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'launch', 'fhirUser', 'patient/Patient.rs'],
  claims: {
    // how the user signed in goes in every id_token (what the portal's two-step
    // rule reads)
    openid: ['sub', 'acr', 'amr'],
    email: ['email', 'email_verified'],
    fhirUser: ['fhirUser'],
  },
  // claims asked for by scope go in the id_token (the portal reads no userinfo)
  conformIdTokenClaims: false,
  acrValues: ['urn:test:pwd', 'urn:test:mfa'],
  extraParams: {
    launch: undefined,
    // SMART: the app names the FHIR server it means; an EHR refuses another one
    aud(ctx, value) {
      if (value !== undefined && value !== fhirBase) {
        throw new errors.InvalidRequest(`aud must be ${fhirBase}`);
      }
    },
  },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const account = setup.accounts[sub];
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, ...account };
      },
    };
  },
});

// test controls, the login page (which signs in whoever the test chose), the FHIR
// endpoint, and the token response's launch context and tampering
provider.use(async (ctx, next) => {
  if (ctx.path === '/_test/state' && ctx.method === 'POST') {
    const body = await new Promise((resolve) => {
      let data = '';
      ctx.req.on('data', (c) => { data += c; });
      ctx.req.on('end', () => resolve(data));
    });
    Object.assign(state, JSON.parse(body));
    ctx.body = { ok: true };
    return;
  }
  if (ctx.path.startsWith('/interaction/')) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const { prompt, params } = details;
    let result;
    if (prompt.name === 'login') {
      const launch = params.launch && state.launches[params.launch];
      if (params.launch && !launch) {
        result = { error: 'access_denied', error_description: 'unknown launch' };
      } else {
        const who = launch ? { sub: launch.sub, amr: state.login.amr, acr: state.login.acr } : state.login;
        if (launch) launched[launch.sub] = launch;
        result = { login: { accountId: who.sub, amr: who.amr, acr: who.acr } };
      }
    } else {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
      if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
      if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
      result = { consent: { grantId: await grant.save() } };
    }
    await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
    return;
  }
  if (ctx.path.startsWith('/fhir/')) {
    await fhir(ctx);
    return;
  }
  await next();
  if (ctx.path === '/token' && ctx.status === 200 && ctx.body && ctx.body.access_token) {
    const token = await provider.AccessToken.find(ctx.body.access_token);
    const launch = token && launched[token.accountId];
    if (launch && token.scope.split(' ').includes('launch')) {
      ctx.body.patient = launch.patient;
      ctx.body.need_patient_banner = launch.need_patient_banner;
    }
    if (state.tamper && ctx.body.id_token) {
      const claims = decodeJwt(ctx.body.id_token);
      const now = Math.floor(Date.now() / 1000);
      if (state.tamper === 'aud') claims.aud = 'another-application';
      if (state.tamper === 'exp') { claims.iat = now - 7200; claims.exp = now - 3600; }
      if (state.tamper === 'nonce') claims.nonce = 'not-the-nonce-that-was-sent';
      if (state.tamper === 'iss') claims.iss = 'https://impostor.example';
      ctx.body.id_token = await new SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid: jwk.kid })
        .sign(privateKey);
    }
  }
});

async function fhir(ctx) {
  ctx.type = 'application/fhir+json';
  if (ctx.path === '/fhir/.well-known/smart-configuration') {
    ctx.type = 'application/json';
    ctx.body = {
      issuer,
      jwks_uri: `${issuer}/jwks`,
      authorization_endpoint: `${issuer}/auth`,
      token_endpoint: `${issuer}/token`,
      grant_types_supported: ['authorization_code'],
      code_challenge_methods_supported: ['S256'],
      scopes_supported: ['openid', 'fhirUser', 'launch', 'patient/Patient.rs'],
      response_types_supported: ['code'],
      capabilities: ['launch-ehr', 'client-confidential-symmetric', 'client-public', 'sso-openid-connect', 'context-ehr-patient', 'permission-v2'],
    };
    return;
  }
  const m = ctx.path.match(/^\/fhir\/Patient\/([A-Za-z0-9\-.]{1,64})$/);
  const auth = ctx.get('authorization');
  const token = auth.startsWith('Bearer ') ? await provider.AccessToken.find(auth.slice(7)) : undefined;
  if (!token || !token.scope.split(' ').includes('patient/Patient.rs')) {
    ctx.status = 401;
    ctx.body = { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'login' }] };
    return;
  }
  const launch = launched[token.accountId];
  if (!m || !launch || launch.patient !== m[1] || !setup.patients[m[1]]) {
    ctx.status = 404;
    ctx.body = { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] };
    return;
  }
  ctx.body = setup.patients[m[1]];
}

handler = provider.callback();
process.stdout.write(`${JSON.stringify({ issuer, fhir: fhirBase, jwk: publicJwk.kid })}\n`);
// the test reads that one line and closes the pipe: anything else goes to stderr
process.stdout.on('error', () => {});
console.log = console.error;
