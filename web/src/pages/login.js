// The login page: username and password, errors in words, then back to
// the page that was asked for.
import { h, replace, messageOf } from '../util.js';

export function loginPage(app, root, next) {
  const error = h('p', { id: 'login-error', class: 'error', role: 'alert', hidden: !app.notice });
  if (app.notice) { error.textContent = app.notice; error.classList.add('notice'); }
  const user = h('input', { name: 'username', id: 'username', autocomplete: 'username', required: true, autofocus: true });
  const pass = h('input', { name: 'password', id: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const button = h('button', { type: 'submit', id: 'login-submit' }, 'Log in');
  const form = h('form', {
    id: 'login', class: 'login-card',
    onsubmit: async (ev) => {
      ev.preventDefault();
      button.disabled = true;
      button.textContent = 'Logging in…';
      error.hidden = true;
      try {
        await app.session.login(user.value.trim(), pass.value);
        app.loggedIn();
        app.navigate(next && next !== '#/login' ? next : '#/fleet');
      } catch (e) {
        error.classList.remove('notice');
        error.textContent = messageOf(e);
        error.hidden = false;
        pass.select();
      } finally {
        button.disabled = false;
        button.textContent = 'Log in';
      }
    },
  },
  h('h1', {}, 'monitor'),
  h('p', { class: 'muted' }, 'Log in to see the fleet. ', h('span', { class: 'hint' }, 'Standalone: user "admin" with the password it printed.')),
  error,
  h('label', { for: 'username' }, 'User'), user,
  h('label', { for: 'password' }, 'Password'), pass,
  button);
  replace(root, h('div', { class: 'login-wrap' }, form));
  document.title = 'monitor — log in';
  setTimeout(() => user.focus(), 0);
  return { destroy() {} };
}
