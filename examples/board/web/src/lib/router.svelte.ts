// Hash-based routing: `#/` board list, `#/b/<boardId>` a board.
type Route = { name: 'board'; boardId: string } | { name: 'home'; boardId: null };

function parse(hash: string): Route {
  const h = (hash || '').replace(/^#/, '');
  const m = h.match(/^\/b\/([^/?#]+)/);
  if (m) {
    let id = m[1];
    try { id = decodeURIComponent(id); } catch { /* keep raw */ }
    return { name: 'board', boardId: id };
  }
  return { name: 'home', boardId: null };
}

export const router: { route: Route } = $state({ route: parse(location.hash) });

window.addEventListener('hashchange', () => {
  router.route = parse(location.hash);
});

export function boardHref(id: string): string {
  return '#/b/' + encodeURIComponent(id);
}

export function goBoard(id: string): void {
  location.hash = boardHref(id);
}

export function goHome(): void {
  location.hash = '#/';
}
