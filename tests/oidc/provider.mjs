// A real OpenID Connect provider for the portal's end-to-end tests: panva's certified
// `oidc-provider`, with its development login pages (any login name, any password). The
// test starts it with node, reads the issuer from the first line it prints, and drives its
// pages in Chromium like a person would.
//
// Environment:
//   CLIENT_ID, CLIENT_SECRET, REDIRECT_URI  the one client (Countersign)
//   ACCOUNTS  JSON: { "alice@example.com": { "groups": ["dba"] }, ... }; the login name is
//             the email. A login name not listed signs in with no groups.
//
// It listens on 127.0.0.1, on a port the system picks, and prints `issuer <url>`.

import http from 'node:http';
import Provider from 'oidc-provider';

const accounts = JSON.parse(process.env.ACCOUNTS || '{}');

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: process.env.CLIENT_ID,
      client_secret: process.env.CLIENT_SECRET,
      redirect_uris: [process.env.REDIRECT_URI],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    // PKCE is required of every client, confidential ones included.
    pkce: { required: () => true },
    cookies: { keys: ['countersign-e2e-only-not-a-secret'] },
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() {
          return {
            sub: id,
            email: id,
            email_verified: true,
            groups: accounts[id]?.groups ?? [],
          };
        },
      };
    },
  });
  // Plain http on loopback: tell koa the connection is what it is.
  provider.proxy = false;
  server.on('request', provider.callback());
  console.log(`issuer ${issuer}`);
});
