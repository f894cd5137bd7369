// Hash-based routing: `#/` board list, `#/b/<boardId>` a board.
function parse(hash) {
  const h = (hash || '').replace(/^#/, '');
  const m = h.match(/^\/b\/([^/?#]+)/);
  if (m) {
    let id = m[1];
    try { id = decodeURIComponent(id); } catch { /* keep raw */ }
    return { name: 'board', boardId: id };
  }
  return { name: 'home', boardId: null };
}

export const router = $state({ route: parse(location.hash) });

window.addEventListener('hashchange', () => {
  router.route = parse(location.hash);
});

export function boardHref(id) {
  return '#/b/' + encodeURIComponent(id);
}

export function goBoard(id) {
  location.hash = boardHref(id);
}

export function goHome() {
  location.hash = '#/';
}
