// The relay's demo chat page: it behaves like a chat site (a prompt box, Enter or a button
// to send, the answer streaming into the last bot message, a typing indicator meanwhile), so
// the relay's browser path runs end to end without an outside site. The answer is made here,
// deterministically, from the prompt: no model, no network.
'use strict';

const log = document.getElementById('log');
const prompt = document.getElementById('prompt');

function reply(text) {
  const words = text.trim().split(/\s+/).filter(Boolean);
  return `Demo answer (no model behind this page): you wrote ${words.length} word${words.length === 1 ? '' : 's'}: "${text.trim()}".`;
}

function message(kind, text) {
  const el = document.createElement('div');
  el.className = `msg ${kind}`;
  el.textContent = text;
  log.appendChild(el);
  return el;
}

function send() {
  const text = prompt.value;
  if (!text.trim()) return;
  prompt.value = '';
  message('user', text);
  const typing = message('typing', 'typing…');
  const words = reply(text).split(' ');
  setTimeout(() => {
    const bot = message('bot', '');
    let i = 0;
    const next = () => {
      bot.textContent = words.slice(0, ++i).join(' ');
      if (i < words.length) {
        setTimeout(next, 30);
      } else {
        typing.remove();
      }
    };
    next();
  }, 300);
}

document.getElementById('chat').addEventListener('submit', (e) => {
  e.preventDefault();
  send();
});
prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) {
    e.preventDefault();
    send();
  }
});
