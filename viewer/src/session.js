// The bearer token: an API key pasted into the sign-in form, or a viewer token handed over in
// the URL fragment (#token=…; a fragment never reaches the server or its logs). It is kept in
// sessionStorage only: gone when the tab closes, never shared with other tabs.

const STORAGE_KEY = 'auditlog.token';

/** Move a token from the URL fragment into sessionStorage, and out of the address bar. */
export function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token');
  if (token === null) return;
  if (token) sessionStorage.setItem(STORAGE_KEY, token);
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', `${location.pathname}${location.search}${rest ? `#${rest}` : ''}`);
}

export const token = () => sessionStorage.getItem(STORAGE_KEY);
export const signIn = (value) => sessionStorage.setItem(STORAGE_KEY, value.trim());
export const signOut = () => sessionStorage.removeItem(STORAGE_KEY);
