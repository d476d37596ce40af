// An OpenID Connect provider standing in for IHEPSSO on one machine (`heps platform up`).
// The protocol is oidc-provider's (an OpenID-certified implementation); this file only
// adds what IHEPSSO has and the library leaves to its user: the accounts with their
// claims (preferred_username, uidNumber, gidNumber, groups [{name, gid}], email,
// email_verified), a login form posting `username` and `password`, and the one client,
// the hub, whose consent is implied as for any first-party client.
//
// node provider.mjs --users USERS.json --issuer http://HOST:PORT --listen HOST:PORT
//                   --client-id ID --redirect-uri URL   (client secret: HEPS_SSO_CLIENT_SECRET)
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    users: { type: 'string' },
    issuer: { type: 'string' },
    listen: { type: 'string' },
    'client-id': { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true },
  },
});
for (const name of ['users', 'issuer', 'listen', 'client-id', 'redirect-uri']) {
  if (!args[name]) {
    console.error(`provider: --${name} is required`);
    process.exit(2);
  }
}
const clientSecret = process.env.HEPS_SSO_CLIENT_SECRET;
if (!clientSecret) {
  console.error('provider: HEPS_SSO_CLIENT_SECRET is not set');
  process.exit(2);
}

// { "<username>": { "password": "...", "claims": { uidNumber, gidNumber, ... } } },
// checked and written by `heps platform up` from the --users YAML file.
const users = JSON.parse(readFileSync(args.users, 'utf8'));
const CLAIMS = ['preferred_username', 'uidNumber', 'gidNumber', 'groups', 'email', 'email_verified'];
const SCOPES = { profile: ['preferred_username', 'uidNumber', 'gidNumber'], email: ['email', 'email_verified'], groups: ['groups'] };

function passwordMatches(user, given) {
  const want = Buffer.from(user.password);
  const got = Buffer.from(given);
  return want.length === got.length && timingSafeEqual(want, got);
}

const provider = new Provider(args.issuer, {
  clients: [{
    client_id: args['client-id'],
    client_secret: clientSecret,
    redirect_uris: args['redirect-uri'],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: { openid: ['sub'], ...SCOPES },
  scopes: ['openid', 'offline_access', ...Object.keys(SCOPES)],
  cookies: { keys: [randomBytes(32).toString('hex')] },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const user = users[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, ...pick(user.claims, CLAIMS) };
      },
    };
  },
  // The hub is the platform's own client: the facility grants it what it asks for.
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(['openid', 'offline_access', ...Object.keys(SCOPES)].join(' '));
    grant.addOIDCClaims(CLAIMS);
    await grant.save();
    return grant;
  },
});

function pick(object, keys) {
  return Object.fromEntries(keys.filter((k) => k in object).map((k) => [k, object[k]]));
}

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(res, status, uid, message) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html><head><title>IHEP SSO (testbed)</title></head><body>
<h1>IHEP single sign-on (testbed)</h1>
${message ? `<p role="alert">${escape(message)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
<label>Username <input name="username" autofocus required></label>
<label>Password <input name="password" type="password" required></label>
<button type="submit">Log in</button>
</form></body></html>`);
}

async function form(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  if (req.method === 'GET' && !action) return page(res, 200, uid, '');
  if (req.method !== 'POST' || action !== 'login') {
    res.writeHead(405);
    return res.end();
  }
  const fields = await form(req);
  const username = fields.get('username') ?? '';
  const user = Object.hasOwn(users, username) ? users[username] : undefined;
  if (!user || !passwordMatches(user, fields.get('password') ?? '')) {
    return page(res, 401, uid, 'Unknown user or wrong password.');
  }
  await provider.interactionFinished(req, res, { login: { accountId: username } }, { mergeWithLastSubmission: false });
}

const handle = provider.callback();
const server = createServer(async (req, res) => {
  const match = /^\/interaction\/([\w-]+)(?:\/(\w+))?$/.exec(req.url.split('?')[0]);
  if (!match) return handle(req, res);
  try {
    await interaction(req, res, match[1], match[2]);
  } catch (err) {
    console.error(`provider: interaction failed: ${err.message}`);
    if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' });
    res.end('This login session has expired; go back to the hub and log in again.\n');
  }
});
const [host, port] = [args.listen.slice(0, args.listen.lastIndexOf(':')), Number(args.listen.slice(args.listen.lastIndexOf(':') + 1))];
server.listen(port, host, () => console.log(`provider: ${args.issuer} for ${Object.keys(users).length} users`));
